//! Who may call: API keys (`--api-key`, `--api-keys-file`, `KILN_API_KEYS`),
//! checked as `Authorization: Bearer KEY` in constant time.

use std::path::Path;

use axum::http::{header, HeaderMap};

/// The keys that admit a request; none means the service is open.
#[derive(Default)]
pub struct Keys {
    /// blake3 digests of the keys: a presented key is hashed and compared
    /// with every one (`blake3::Hash`'s equality is constant time), so
    /// neither a key's bytes nor its length shows in the timing.
    digests: Vec<blake3::Hash>,
}

impl Keys {
    /// Keys from the command line, a file (one per line; blank lines and
    /// `#` comments skipped) and the environment's `KILN_API_KEYS`
    /// (separated by commas or whitespace).
    pub fn gather(
        given: &[String],
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<Keys, String> {
        let mut keys: Vec<String> = given.to_vec();
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the API keys file `{}`: {e}", file.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if let Some(env) = env {
            keys.extend(
                env.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|k| !k.is_empty())
                    .map(String::from),
            );
        }
        if let Some(bad) = keys.iter().find(|k| !is_token(k)) {
            // Says which rule, never the key.
            return Err(format!(
                "an API key of {} characters holds a character a bearer token can't (spaces, quotes, control characters): use letters, digits and `-._~+/=`",
                bad.chars().count()
            ));
        }
        Ok(Keys {
            digests: keys.iter().map(|k| blake3::hash(k.as_bytes())).collect(),
        })
    }

    /// Whether no key is required.
    pub fn is_open(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many keys admit requests.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether `headers` carry `Authorization: Bearer <a key>` (always,
    /// when the service is open).
    pub fn admit(&self, headers: &HeaderMap) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let presented = blake3::hash(token.trim().as_bytes());
        // Every key is compared, with no early exit.
        self.digests
            .iter()
            .fold(false, |admitted, key| admitted | (*key == presented))
    }
}

/// RFC 6750's token68 characters.
fn is_token(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn only_a_listed_bearer_key_is_admitted() {
        let keys = Keys::gather(&["s3cret-1".into()], None, Some("other,third key2")).unwrap();
        assert_eq!(keys.len(), 4);
        assert!(keys.admit(&headers("Bearer s3cret-1")));
        assert!(keys.admit(&headers("Bearer key2")));
        for wrong in [
            "Bearer s3cret-2",
            "Bearer s3cret-1x",
            "Bearer s3",
            "s3cret-1",
            "Basic s3cret-1",
            "Bearer ",
        ] {
            assert!(!keys.admit(&headers(wrong)), "{wrong}");
        }
        assert!(!keys.admit(&HeaderMap::new()));
        assert!(Keys::default().admit(&HeaderMap::new()));
    }

    #[test]
    fn keys_come_from_a_file_and_bad_ones_are_refused_without_showing_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# team keys\nalpha\n\n beta \n").unwrap();
        let keys = Keys::gather(&[], Some(&file), None).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.admit(&headers("Bearer beta")));
        let e = Keys::gather(&["has space\"zzsecret".into()], None, None)
            .err()
            .unwrap();
        assert!(!e.contains("zzsecret"), "{e}");
        let e = Keys::gather(&[], Some(&dir.path().join("missing")), None)
            .err()
            .unwrap();
        assert!(e.contains("cannot read the API keys file"), "{e}");
    }
}
