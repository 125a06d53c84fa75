//! `continue` tokens: a page's revision and the last key it served.

use base64::Engine as _;

use super::ApiError;

/// A position in a paginated list: the revision it is served at and the last key served.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Continue {
    pub(crate) rv: u64,
    pub(crate) start: String,
}

pub(crate) fn encode_continue(c: &Continue) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).expect("serializable"))
}

pub(crate) fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("continue: {token:?} is not a continue token of this server"))
        })
}
