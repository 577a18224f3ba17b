//! The SDK version a component was built with, embedded as a custom section.
//!
//! Every component linked against this crate carries a custom section named
//! [`SDK_VERSION_SECTION`] whose content is [`SDK_VERSION`] in UTF-8, so that `plugboard plugin
//! inspect` can say which SDK built it. [`export!`](crate::export) emits the section in the
//! plugin crate (the link keeps the custom sections of the crate it links, not of its
//! dependencies); it lives in the component's core module.

/// The version of this crate.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the custom section holding [`SDK_VERSION`].
pub const SDK_VERSION_SECTION: &str = "plugboard-sdk-version";

/// [`SDK_VERSION`] as a byte array of its own length, for the section's static.
const fn version_bytes<const N: usize>() -> [u8; N] {
    let version = SDK_VERSION.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = version[i];
        i += 1;
    }
    out
}

/// [`SDK_VERSION`] as bytes, for the section `export!` emits.
#[doc(hidden)]
pub const fn sdk_version_bytes<const N: usize>() -> [u8; N] {
    version_bytes()
}

/// Emits the version section. [`export!`](crate::export) calls it, so that the static is in
/// the plugin crate itself: the component link keeps the custom sections of the crate being
/// linked, and drops those of dependencies. The section's name is a literal (`link_section`
/// takes no constant); keep it equal to [`SDK_VERSION_SECTION`].
#[doc(hidden)]
#[macro_export]
macro_rules! __sdk_version_section {
    () => {
        #[allow(
            unsafe_code,
            reason = "`link_section` is an unsafe attribute; the static is plain bytes no code reads"
        )]
        #[unsafe(link_section = "plugboard-sdk-version")]
        #[used]
        static __PLUGBOARD_SDK_VERSION: [u8; $crate::SDK_VERSION.len()] =
            $crate::__private_sdk_version_bytes();
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_holds_the_version_bytes() {
        let bytes: [u8; SDK_VERSION.len()] = version_bytes();
        assert_eq!(&bytes, SDK_VERSION.as_bytes());
    }
}
