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

fn mac(token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The signature Twilio sends for a request to `url` with form `params`.
pub fn sign(token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(token, url, params).finalize().into_bytes())
}

/// Checks signatures of requests to our public URL.
pub struct SignatureVerifier {
    token: SecretString,
    /// The public base URL without and with its explicit default port.
    bases: Vec<String>,
}

impl SignatureVerifier {
    pub fn new(token: SecretString, public_url: &str) -> Self {
        Self {
            token,
            bases: base_variants(public_url),
        }
    }

    /// `path_and_query` as received ("/webhooks/status?call_id=…").
    pub fn verify(
        &self,
        path_and_query: &str,
        params: &[(String, String)],
        signature: &str,
    ) -> bool {
        let Ok(expected) = STANDARD.decode(signature.trim()) else {
            return false;
        };
        self.bases.iter().any(|base| {
            let url = format!("{base}{path_and_query}");
            // verify_slice compares in constant time.
            mac(self.token.expose_secret(), &url, params)
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
    let mut variants = vec![format!("{}://{host}:{port}{path}", url.scheme())];
    if url.port().is_none() || Some(port) == default_port(url.scheme()) {
        variants.push(format!("{}://{host}{path}", url.scheme()));
    }
    variants
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
