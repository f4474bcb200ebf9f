//! Twilio request signatures (`X-Twilio-Signature`):
//! base64(HMAC-SHA1(auth token, full URL + every POST param sorted by name, name then value)).
//!
//! Written by hand: it is a dozen lines over `hmac`/`sha1`, and no maintained Rust crate
//! implements Twilio's scheme. The URL is rebuilt from `CALLBOT_PUBLIC_URL` + path + query,
//! never from the Host header, and accepted with and without the scheme's default port, as
//! Twilio's own libraries do.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use url::Url;

type HmacSha1 = Hmac<Sha1>;

fn mac<K: AsRef<str>, V: AsRef<str>>(token: &str, url: &str, params: &[(K, V)]) -> HmacSha1 {
    let keyed = HmacSha1::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac_from(keyed, url, params)
}

fn mac_from<K: AsRef<str>, V: AsRef<str>>(
    mut mac: HmacSha1,
    url: &str,
    params: &[(K, V)],
) -> HmacSha1 {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends for a request to `url` with form `params`.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(token: &str, url: &str, params: &[(K, V)]) -> String {
    STANDARD.encode(mac(token, url, params).finalize().into_bytes())
}

/// Checks signatures of requests to our public URL.
pub struct SignatureVerifier {
    token: SecretString,
    /// HMAC state already keyed with the token, cloned for each request: keying hashes two
    /// blocks, a third of a callback's signature check.
    keyed: HmacSha1,
    /// The public base URL as configured first (what Twilio signs when the URL it was given
    /// is ours), then with or without its explicit default port.
    bases: Vec<String>,
}

impl SignatureVerifier {
    pub fn new(token: SecretString, public_url: &str) -> Self {
        let keyed = HmacSha1::new_from_slice(token.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        Self {
            token,
            keyed,
            bases: base_variants(public_url),
        }
    }

    /// `path_and_query` as received ("/webhooks/status?call_id=…").
    pub fn verify<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path_and_query: &str,
        params: &[(K, V)],
        signature: &str,
    ) -> bool {
        let Ok(expected) = STANDARD.decode(signature.trim()) else {
            return false;
        };
        let mut url = String::with_capacity(self.bases[0].len() + 8 + path_and_query.len());
        self.bases.iter().any(|base| {
            url.clear();
            url.push_str(base);
            url.push_str(path_and_query);
            // verify_slice compares in constant time.
            mac_from(self.keyed.clone(), &url, params)
                .verify_slice(&expected)
                .is_ok()
        })
    }

    pub fn token(&self) -> &SecretString {
        &self.token
    }
}

/// "https://x.com" → ["https://x.com", "https://x.com:443"]; also the reverse.
fn base_variants(public_url: &str) -> Vec<String> {
    let trimmed = public_url.trim_end_matches('/').to_owned();
    let Ok(url) = Url::parse(&trimmed) else {
        return vec![trimmed];
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return vec![trimmed];
    };
    let path = url.path().trim_end_matches('/');
    let host = if url.host().is_some_and(|h| matches!(h, url::Host::Ipv6(_))) {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let with_port = format!("{}://{host}:{port}{path}", url.scheme());
    let without = format!("{}://{host}{path}", url.scheme());
    if Some(port) != default_port(url.scheme()) {
        vec![with_port]
    } else if trimmed.eq_ignore_ascii_case(&with_port) {
        vec![with_port, without]
    } else {
        // Written without its port: that is what Twilio signs, so it is tried first.
        vec![without, with_port]
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    /// Twilio's documented test vector.
    #[test]
    fn documented_vector() {
        assert_eq!(
            sign(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params()
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn verifies_with_and_without_default_port() {
        let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        for base in [
            "https://mycompany.com",
            "https://mycompany.com:443",
            "https://mycompany.com/",
        ] {
            let v = SignatureVerifier::new("12345".to_owned().into(), base);
            assert!(v.verify("/myapp.php?foo=1&bar=2", &params(), sig), "{base}");
        }
        let with_port = sign(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &params(),
        );
        let v = SignatureVerifier::new("12345".to_owned().into(), "https://mycompany.com");
        assert!(v.verify("/myapp.php?foo=1&bar=2", &params(), &with_port));
    }

    #[test]
    fn the_url_as_configured_is_tried_first() {
        let first = |base: &str| base_variants(base)[0].clone();
        assert_eq!(first("https://mycompany.com/"), "https://mycompany.com");
        assert_eq!(
            first("https://mycompany.com:443"),
            "https://mycompany.com:443"
        );
        assert_eq!(first("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(base_variants("http://127.0.0.1:8080").len(), 1);
    }

    #[test]
    fn rejects_tampering() {
        let v = SignatureVerifier::new("12345".to_owned().into(), "https://mycompany.com");
        let sig = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
        let mut p = params();
        p[2].1 = "9999".into();
        assert!(!v.verify("/myapp.php?foo=1&bar=2", &p, sig));
        assert!(!v.verify("/myapp.php?foo=1&bar=3", &params(), sig));
        assert!(!v.verify("/myapp.php?foo=1&bar=2", &params(), "not base64!"));
        let other = SignatureVerifier::new("54321".to_owned().into(), "https://mycompany.com");
        assert!(!other.verify("/myapp.php?foo=1&bar=2", &params(), sig));
    }
}
