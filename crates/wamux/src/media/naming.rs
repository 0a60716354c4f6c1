//! File names and types: the stored name `<unix ts>_<32 hex>.<ext>`, the extension for a
//! MIME type and back, and the cleaning of user-given names.

/// MIME types we know, with the extension their files get. The first entry for a type is
/// the one used when storing; every entry is accepted when reading an extension.
const TYPES: &[(&str, &str)] = &[
    ("image/jpeg", "jpg"),
    ("image/jpeg", "jpeg"),
    ("image/png", "png"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
    ("image/heic", "heic"),
    ("image/bmp", "bmp"),
    ("video/mp4", "mp4"),
    ("video/3gpp", "3gp"),
    ("video/quicktime", "mov"),
    ("video/webm", "webm"),
    ("video/x-matroska", "mkv"),
    ("audio/ogg", "ogg"),
    ("audio/ogg", "opus"),
    ("audio/mpeg", "mp3"),
    ("audio/mp4", "m4a"),
    ("audio/aac", "aac"),
    ("audio/amr", "amr"),
    ("audio/wav", "wav"),
    ("audio/x-wav", "wav"),
    ("audio/webm", "weba"),
    ("application/pdf", "pdf"),
    ("text/plain", "txt"),
    ("text/csv", "csv"),
    ("application/zip", "zip"),
    ("application/json", "json"),
    ("application/msword", "doc"),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "docx",
    ),
    ("application/vnd.ms-excel", "xls"),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xlsx",
    ),
    ("application/vnd.ms-powerpoint", "ppt"),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "pptx",
    ),
    ("application/vnd.android.package-archive", "apk"),
    ("application/octet-stream", "bin"),
];

/// The bare, lower-case type of a MIME type (`"Audio/OGG; codecs=opus"` -> `"audio/ogg"`).
pub fn essence(mimetype: &str) -> String {
    mimetype
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// True for a syntactically valid `type/subtype[; params]`.
pub fn is_valid_mimetype(mimetype: &str) -> bool {
    let e = essence(mimetype);
    let Some((t, s)) = e.split_once('/') else {
        return false;
    };
    let token = |x: &str| {
        !x.is_empty()
            && x.len() <= 127
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    token(t) && token(s) && mimetype.len() <= 255 && !mimetype.chars().any(char::is_control)
}

/// The extension a stored file of this type gets; `bin` when the type is unknown.
pub fn ext_for(mimetype: &str) -> &'static str {
    let e = essence(mimetype);
    TYPES
        .iter()
        .find(|(m, _)| *m == e)
        .map(|(_, x)| *x)
        .unwrap_or("bin")
}

/// The type of a file from its extension, if known.
pub fn mimetype_for_ext(ext: &str) -> Option<&'static str> {
    let ext = ext.to_ascii_lowercase();
    TYPES.iter().find(|(_, x)| *x == ext).map(|(m, _)| *m)
}

/// The type of a file name (`"report.PDF"` -> `application/pdf`), if known.
pub fn mimetype_for_name(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    mimetype_for_ext(ext)
}

/// A new stored name: `<unix ts>_<128 random bits as hex>.<ext>`. The random part makes
/// links unguessable, so a public `/uploads` does not expose other people's files.
pub fn new_file_name(mimetype: &str, now: i64) -> String {
    let r: [u8; 16] = rand::random();
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!("{now}_{hex}.{}", ext_for(mimetype))
}

/// True only for names [`new_file_name`] makes. Everything served or deleted by name goes
/// through this, so no path separator, dot segment, NUL or odd byte ever reaches the disk.
pub fn is_stored_name(name: &str) -> bool {
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    let Some((ts, hex)) = stem.split_once('_') else {
        return false;
    };
    (1..=20).contains(&ts.len())
        && ts.bytes().all(|b| b.is_ascii_digit())
        && hex.len() == 32
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && (1..=8).contains(&ext.len())
        && ext
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The unix time at the start of a stored name.
pub fn stored_at(name: &str) -> Option<i64> {
    name.split_once('_')?.0.parse().ok()
}

/// A user-given file name made safe to show and to put in a header: the last path
/// component, without control characters, quotes or leading dots, at most 200 bytes.
pub fn sanitize_original_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | '|' | '*' | '?' | ':'))
        .collect();
    let mut s = cleaned.trim().trim_start_matches('.').trim().to_owned();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unguessable_and_recognized() {
        let a = new_file_name("image/jpeg", 1_700_000_000);
        let b = new_file_name("image/jpeg", 1_700_000_000);
        assert_ne!(a, b);
        assert!(a.starts_with("1700000000_") && a.ends_with(".jpg"), "{a}");
        assert!(is_stored_name(&a));
        assert_eq!(stored_at(&a), Some(1_700_000_000));
        for bad in [
            "",
            "..",
            "../x",
            "1_abc.jpg",
            "/etc/passwd",
            "1700000000_0123456789abcdef0123456789abcdef.jpg/..",
            "1700000000_0123456789abcdef0123456789abcdef.j\\g",
            "1700000000_0123456789ABCDEF0123456789abcdef.jpg",
            "1700000000_0123456789abcdef0123456789abcdef.jpg\0",
            "1700000000_0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_stored_name(bad), "{bad:?}");
        }
        assert!(is_stored_name(
            "1700000000_0123456789abcdef0123456789abcdef.jpg"
        ));
    }

    #[test]
    fn types_and_extensions() {
        assert_eq!(ext_for("image/jpeg"), "jpg");
        assert_eq!(ext_for("audio/ogg; codecs=opus"), "ogg");
        assert_eq!(ext_for("application/x-unknown"), "bin");
        assert_eq!(mimetype_for_name("Report.PDF"), Some("application/pdf"));
        assert_eq!(mimetype_for_name("noext"), None);
        assert!(is_valid_mimetype("audio/ogg; codecs=opus"));
        assert!(!is_valid_mimetype("nonsense"));
        assert!(!is_valid_mimetype("a/b\n"));
    }

    #[test]
    fn original_names_are_cleaned() {
        assert_eq!(
            sanitize_original_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            sanitize_original_name("C:\\Users\\x\\foto.jpg").as_deref(),
            Some("foto.jpg")
        );
        assert_eq!(
            sanitize_original_name("a\u{0}b\"c.pdf").as_deref(),
            Some("abc.pdf")
        );
        assert_eq!(sanitize_original_name(".."), None);
        assert_eq!(sanitize_original_name("   "), None);
        assert!(sanitize_original_name(&"é".repeat(300)).unwrap().len() <= 200);
    }
}
