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
    if is_utf16(bytes) {
        return Err(ImportError::Encoding(
            "the file is UTF-16 (e.g. Excel's \"Unicode Text\"), which an import does not \
             read: save it as \"CSV UTF-8\""
                .to_owned(),
        ));
    }
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

/// A UTF-16 byte order mark, or the zero byte beside each ASCII character that UTF-16
/// text without one starts with. Neither decoding would help: as UTF-8 it is refused
/// at the first odd byte, as Windows-1252 it becomes text with a NUL between letters.
fn is_utf16(bytes: &[u8]) -> bool {
    match bytes {
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] => true,
        [a, 0, b, 0, ..] | [0, a, 0, b, ..] => a.is_ascii() && b.is_ascii() && *a != 0,
        _ => false,
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
    fn utf16_is_refused_with_the_way_out_in_either_encoding() {
        let text = "tag,name\nM-1,Moteur\n";
        let little: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let big: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let with_bom = [&[0xFF, 0xFE][..], &little].concat();
        for bytes in [&little, &big, &with_bom] {
            for encoding in [Encoding::Utf8, Encoding::Windows1252] {
                let Err(ImportError::Encoding(message)) = decode(bytes, encoding) else {
                    panic!("{bytes:?} was decoded as {encoding:?}");
                };
                // Before: the way out offered was ?encoding=windows-1252.
                assert!(message.contains("UTF-16"), "{message}");
                assert!(!message.contains("windows-1252"), "{message}");
            }
        }
        assert_eq!(
            decode(b"tag\nM-1\n", Encoding::Utf8).ok().as_deref(),
            Some("tag\nM-1\n")
        );
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
