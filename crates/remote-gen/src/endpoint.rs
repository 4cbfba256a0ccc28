//! Endpoint URLs: the OpenAI base (`…/v1`) and the server's root (native routes).

/// One endpoint's URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointUrl {
    /// The OpenAI base, without a trailing slash: `http://host:8000/v1`.
    pub base: String,
    /// The server's root (the base without its trailing `/v1`): `http://host:8000`. Native
    /// routes (`/props`, `/completion`, `/generate`, `/info`, `/version`) hang off it.
    pub root: String,
    /// The base with any user info replaced by `***`, for messages and manifests.
    pub display: String,
}

impl EndpointUrl {
    /// Parses `http(s)://host[:port][/path]`: a bare host means `/v1`; a path ending in `/v1`
    /// gives the root without it; any other path is both base and root.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim().trim_end_matches('/');
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or("not an http:// or https:// URL")?;
        if rest.contains(['?', '#']) {
            return Err("a query or fragment has no place in an endpoint URL".into());
        }
        if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the URL holds whitespace".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let host = authority.rsplit('@').next().unwrap_or(authority);
        if host.is_empty() || host.starts_with(':') {
            return Err("no host".into());
        }
        let (base, root) = if path.is_empty() {
            (format!("{url}/v1"), url.to_string())
        } else if let Some(root) = url.strip_suffix("/v1") {
            (url.to_string(), root.to_string())
        } else {
            (url.to_string(), url.to_string())
        };
        Ok(Self {
            display: redact(&base),
            base,
            root,
        })
    }
}

/// The URL with any `user:password@` replaced by `***@`.
pub(crate) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_roots() {
        let e = EndpointUrl::parse("http://h:8000/v1/").unwrap();
        assert_eq!(
            (e.base.as_str(), e.root.as_str()),
            ("http://h:8000/v1", "http://h:8000")
        );
        let e = EndpointUrl::parse("http://h:8000").unwrap();
        assert_eq!(
            (e.base.as_str(), e.root.as_str()),
            ("http://h:8000/v1", "http://h:8000")
        );
        let e = EndpointUrl::parse("https://proxy/llm/v1").unwrap();
        assert_eq!(e.root, "https://proxy/llm");
        let e = EndpointUrl::parse("https://proxy/openai").unwrap();
        assert_eq!(
            (e.base.as_str(), e.root.as_str()),
            ("https://proxy/openai", "https://proxy/openai")
        );
        for bad in [
            "h:8000/v1",
            "ftp://h/v1",
            "http://",
            "http://:80/v1",
            "http://h/v1?x=1",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_info_is_redacted() {
        let e = EndpointUrl::parse("http://me:secret@h:1/v1").unwrap();
        assert_eq!(e.display, "http://***@h:1/v1");
        assert_eq!(redact("http://h/a@b"), "http://h/a@b");
    }
}
