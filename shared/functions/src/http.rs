//! Replies to Function URL requests.

/// A response to a Function URL request.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

impl HttpResponse {
    pub fn new(status: u16, body: serde_json::Value) -> Self {
        Self { status, body }
    }

    /// The Function URL response payload (format 2.0).
    pub fn to_lambda(&self) -> serde_json::Value {
        serde_json::json!({
            "statusCode": self.status,
            "headers": {"content-type": "application/json"},
            "body": self.body.to_string(),
        })
    }
}
