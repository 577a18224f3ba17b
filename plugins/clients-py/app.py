"""`clients`, written in Python: the same Socket apparatus as plugins/clients (Rust), built into
a WebAssembly component with componentize-py against the same WIT (plugboard:apparatus@0.1.0).

It keeps an HTTP API's client registry in step with the Plugs coupled to the Socket:
`coupled` registers the Plug's client (POST {apiUrl}/clients), `updated` updates it (PUT
{apiUrl}/clients/{clientId}, registering it again when the API lost it) and removes the Plug's
other clients, `decoupled` removes every client of the Plug. See plugins/clients/README.md for
the contract; both builds behave identically.
"""

import json
import re

from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.types import (
    HookError_Failed,
    HookError_InvalidInput,
    HookError_RetryLater,
)

CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def invalid(message):
    return Err(HookError_InvalidInput(message))


def info(message):
    host.log(host.Level.INFO, message)


class Registration:
    def __init__(self, coupling):
        socket_config = dict(coupling.socket_config)
        plug_config = dict(coupling.plug_config)
        self.api_url = socket_config.get("apiUrl", "").rstrip("/")
        if not self.api_url:
            raise invalid("the Socket's config has no apiUrl")
        self.client_id = plug_config.get("clientId", "")
        if not CLIENT_ID.match(self.client_id):
            raise invalid(
                "clientId %s must be 1 to 64 letters, digits, '-', '_' or '.'"
                % json.dumps(self.client_id)
            )
        uris = plug_config.get("redirectUris", "")
        self.redirect_uris = [u.strip() for u in uris.split(",") if u.strip()]
        if coupling.plug is None:
            raise invalid("the hook was called without its Plug")
        meta = json.loads(coupling.plug).get("metadata", {})
        self.owner = "%s/%s" % (meta.get("namespace", ""), meta.get("name", ""))
        self.api_token = socket_config.get("apiToken") or None

    def body(self):
        return json.dumps(
            {
                "clientId": self.client_id,
                "redirectUris": self.redirect_uris,
                "owner": self.owner,
            }
        ).encode()

    def send(self, method, path, body=None):
        headers = []
        if self.api_token:
            headers.append(("authorization", "Bearer " + self.api_token))
        if body is not None:
            headers.append(("content-type", "application/json"))
        try:
            return host.send(host.Request(method, self.api_url + path, headers, body))
        except Err as e:
            error = e.value
            message = "HTTP request failed: %s" % describe(error)
            if isinstance(error, host.SendError_Denied):
                raise invalid(message)
            if isinstance(error, host.SendError_TooLarge):
                raise Err(HookError_Failed(message))
            raise Err(HookError_RetryLater(message))

    def unexpected(self, action, response):
        message = "%s client %s answered HTTP %d" % (action, self.client_id, response.status)
        if response.status >= 500 or response.status == 429:
            return Err(HookError_RetryLater(message))
        return Err(HookError_Failed(message))


def describe(error):
    value = getattr(error, "value", None)
    name = type(error).__name__.split("_", 1)[-1].lower()
    return "%s: %s" % (name, value) if value else name


def register(r):
    response = r.send("POST", "/clients", r.body())
    if response.status in (200, 201):
        info("registered client %s for %s" % (r.client_id, r.owner))
        return
    if response.status == 409:
        existing = r.send("GET", "/clients/" + r.client_id)
        try:
            owner = json.loads(existing.body).get("owner")
        except (ValueError, AttributeError):
            owner = None
        if owner == r.owner:
            update(r)
            return
        raise invalid(
            "clientId %s is already registered by %s; choose another clientId"
            % (r.client_id, owner or "someone else")
        )
    raise r.unexpected("registering", response)


def update(r):
    response = r.send("PUT", "/clients/" + r.client_id, r.body())
    if response.status in (200, 201, 204):
        info("updated client %s for %s" % (r.client_id, r.owner))
    elif response.status == 404:
        register(r)
    else:
        raise r.unexpected("updating", response)
    remove_owned(r, keep=r.client_id)


def remove_owned(r, keep=None):
    response = r.send("GET", "/clients")
    if not 200 <= response.status < 300:
        raise r.unexpected("listing", response)
    try:
        listed = json.loads(response.body)
    except ValueError as e:
        raise Err(HookError_Failed("listing clients gave an unreadable answer: %s" % e))
    for client in listed if isinstance(listed, list) else []:
        if not isinstance(client, dict) or client.get("owner") != r.owner:
            continue
        client_id = client.get("clientId")
        if client_id == keep or not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
            continue
        answer = r.send("DELETE", "/clients/" + client_id)
        if answer.status not in (200, 204, 404):
            raise r.unexpected("removing", answer)
        info("removed client %s of %s" % (client_id, r.owner))


class Hooks(exports.Hooks):
    def config(self, input):
        return []

    def created(self, input):
        return None

    def coupled(self, input):
        register(Registration(input))

    def updated(self, input):
        update(Registration(input))

    def decoupled(self, input):
        remove_owned(Registration(input))

    def deleted(self, input):
        return None
