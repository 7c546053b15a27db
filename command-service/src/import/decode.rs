//! Bytes to text. Spreadsheets save CSV as UTF-8 (Excel's "CSV UTF-8" adds a BOM) or,
//! on Windows in Western Europe, as Windows-1252; the latter is only decoded when the
//! client says so, because guessing an encoding silently corrupts names.

use super::ImportError;
use std::borrow::Cow;

/// Text encodings an import accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Utf8,
    Windows1252,
}

impl Encoding {
    /// The encoding a label names (`utf-8`, `windows-1252`, and the aliases browsers
    /// know, e.g. `latin1`, `cp1252`); `None` for anything else.
    pub fn from_label(label: &str) -> Option<Self> {
        let encoding = encoding_rs::Encoding::for_label(label.trim().as_bytes())?;
        if encoding == encoding_rs::UTF_8 {
            Some(Encoding::Utf8)
        } else if encoding == encoding_rs::WINDOWS_1252 {
            Some(Encoding::Windows1252)
        } else {
            None
        }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decode the body, dropping a UTF-8 byte order mark.
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<Cow<'_, str>, ImportError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    match encoding {
        Encoding::Utf8 => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|error| ImportError::Encoding(not_utf8(bytes, error.valid_up_to()))),
        // Every byte has a meaning in Windows-1252, so decoding cannot fail.
        Encoding::Windows1252 => Ok(encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(bytes)
            .0),
    }
}

/// The message for a body that is not UTF-8: where, and how to ask for decoding.
fn not_utf8(bytes: &[u8], valid_up_to: usize) -> String {
    let line = bytes[..valid_up_to]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1;
    let byte = bytes.get(valid_up_to).copied().unwrap_or_default();
    format!(
        "the file is not valid UTF-8 (byte 0x{byte:02X} on line {line}); it looks like \
         Windows-1252/Latin-1 (e.g. an Excel \"CSV\" export): send it again with \
         ?encoding=windows-1252, or save it as \"CSV UTF-8\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_utf8_bom_is_dropped() {
        let text = decode(b"\xEF\xBB\xBFtag;name", Encoding::Utf8).unwrap();
        assert_eq!(text, "tag;name");
    }

    #[test]
    fn windows_1252_bytes_are_refused_as_utf8_with_the_line_and_the_way_out() {
        let error = decode(b"tag\nM-1 \xB0C\n", Encoding::Utf8).unwrap_err();
        let ImportError::Encoding(message) = error else {
            panic!("expected an encoding error, got {error:?}");
        };
        assert!(message.contains("byte 0xB0 on line 2"), "{message}");
        assert!(message.contains("?encoding=windows-1252"), "{message}");
    }

    #[test]
    fn windows_1252_decodes_degree_and_accents_on_request() {
        let text = decode(b"Moteur \xE9 80\xB0C", Encoding::Windows1252).unwrap();
        assert_eq!(text, "Moteur é 80°C");
    }

    #[test]
    fn labels_name_only_the_two_supported_encodings() {
        assert_eq!(Encoding::from_label("UTF-8"), Some(Encoding::Utf8));
        assert_eq!(Encoding::from_label("latin1"), Some(Encoding::Windows1252));
        assert_eq!(
            Encoding::from_label("windows-1252"),
            Some(Encoding::Windows1252)
        );
        assert_eq!(Encoding::from_label("shift_jis"), None);
    }
}
