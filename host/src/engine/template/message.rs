//! Turns minijinja's errors into the one-line messages of [`super::TemplateError`]: undefined
//! values named, include/import refused in plain words, no source excerpt, no values, bounded.

use minijinja::ErrorKind;

/// Longest message kept, in bytes.
const MAX_MESSAGE_BYTES: usize = 300;

/// A one-line message for `err`: no source excerpt, no values, at most [`MAX_MESSAGE_BYTES`].
pub(super) fn message(err: &minijinja::Error, fuel: u64) -> String {
    let detail = err.detail().unwrap_or_default();
    let text = match err.kind() {
        ErrorKind::UndefinedError => undefined_message(detail),
        ErrorKind::OutOfFuel => {
            format!("the template used up its fuel of {fuel} (a very long or endless loop?)")
        }
        ErrorKind::SyntaxError
            if ["include", "import", "extends", "from"]
                .iter()
                .any(|s| detail == format!("unknown statement {s}")) =>
        {
            "templates cannot include, import or extend other templates".to_owned()
        }
        ErrorKind::InvalidOperation if !detail.is_empty() => detail.to_owned(),
        kind if detail.is_empty() => kind.to_string(),
        kind => format!("{kind}: {detail}"),
    };
    let mut text = text.replace(['\n', '\r'], " ");
    if text.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// ``undefined variable `x` `` or ``undefined value `x.y` `` from minijinja's debug detail
/// (`` `x.y` is undefined``, possibly with a location suffix).
fn undefined_message(detail: &str) -> String {
    let mut parts = detail.splitn(3, '`');
    let expr = match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(expr), Some(_)) if !expr.is_empty() => expr,
        _ => return "undefined value".to_owned(),
    };
    let what = if expr.contains(['.', '[', '(']) {
        "value"
    } else {
        "variable"
    };
    format!("undefined {what} `{expr}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_and_kept_on_one_line() {
        let err = minijinja::Error::new(ErrorKind::InvalidOperation, "é\n".repeat(400));
        let text = message(&err, 1);
        assert!(!text.contains('\n') && text.ends_with('…'), "{text}");
        assert!(text.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
    }
}
