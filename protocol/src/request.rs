//! Typed request framing for the client side of a connection, with no I/O: a request struct
//! `R` becomes a whole frame ([`encode_request`]) and a response frame becomes `R::Response`
//! ([`decode_response`]). The caller owns the socket: the blocking client (`shardlog-client`)
//! writes these frames to a std `TcpStream`, the broker's replica fetcher to an io_uring socket
//! on its shard.
//!
//! Unlike [`crate::frame`], which works on `RequestKind`/`ResponseKind` for any API, these are
//! generic over one message type, so a caller gets the response struct it asked for.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// The name of an API key for messages (`Fetch`, `CreateTopics`).
pub fn api_name(api_key: i16) -> String {
    match ApiKey::try_from(api_key) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("api key {api_key}"),
    }
}

/// Encodes a whole request frame: length prefix, header at `R`'s header version, body.
pub fn encode_request<R: Request>(
    req: &R,
    version: i16,
    correlation_id: i32,
    client_id: Option<StrBytes>,
) -> Result<BytesMut, String> {
    if version < R::VERSIONS.min || version > R::VERSIONS.max {
        return Err(format!(
            "{} v{version} is outside the versions this client can encode ({})",
            api_name(R::KEY),
            R::VERSIONS
        ));
    }
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id);
    let mut buf = BytesMut::with_capacity(128);
    buf.put_i32(0);
    header
        .encode(&mut buf, R::header_version(version))
        .map_err(|e| format!("cannot encode {} v{version} header: {e}", api_name(R::KEY)))?;
    req.encode(&mut buf, version)
        .map_err(|e| format!("cannot encode {} v{version}: {e}", api_name(R::KEY)))?;
    let len = i32::try_from(buf.len() - 4)
        .map_err(|_| format!("{} request too large", api_name(R::KEY)))?;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Decodes a response frame (without length prefix) to `R`'s response at `version`. Trailing
/// bytes are an error: they mean the two sides disagree about the layout.
///
/// The frame first goes through [`crate::frame::decode_response`], whose allocation guard
/// refuses array counts larger than the bytes left: `kafka_protocol`'s decoders reserve memory
/// for a claimed count before reading any element, and a failed allocation aborts the process.
/// Once the guarded decode succeeds, the typed decode of the same bytes follows the same path
/// and is bounded too.
pub fn decode_response<R: Request>(frame: Bytes, version: i16) -> Result<R::Response, String> {
    let api = api_name(R::KEY);
    let api_key =
        ApiKey::try_from(R::KEY).map_err(|_| format!("unknown api key {} in response", R::KEY))?;
    let header_version = R::Response::header_version(version);
    let mut body = frame.clone();
    ResponseHeader::decode(&mut body, header_version)
        .map_err(|e| format!("cannot decode {api} v{version} response header: {e}"))?;
    // A broker that does not know the ApiVersions version asked for answers in v0 layout with
    // UNSUPPORTED_VERSION; the error code comes first in every version.
    let version = if R::KEY == ApiVersionsRequest::KEY
        && body.len() >= 2
        && (&body[..2]).get_i16() == ResponseError::UnsupportedVersion.code()
    {
        0
    } else {
        version
    };
    crate::frame::decode_response(api_key, version, frame)
        .map_err(|e| format!("cannot decode {api} v{version} response: {e}"))?;
    let response = R::Response::decode(&mut body, version)
        .map_err(|e| format!("cannot decode {api} v{version} response: {e}"))?;
    if body.has_remaining() {
        return Err(format!(
            "{} bytes left over after decoding {api} v{version} response",
            body.remaining()
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, RequestKind, ResponseKind,
    };

    #[test]
    fn a_request_frame_decodes_as_the_broker_reads_it() {
        let req = MetadataRequest::default().with_allow_auto_topic_creation(false);
        let frame = encode_request(&req, 12, 7, Some(StrBytes::from_static_str("c"))).unwrap();
        let len = frame::frame_len(&frame, usize::MAX).unwrap().unwrap();
        assert_eq!(len, frame.len() - 4);
        let decoded = frame::decode_request(frame.freeze().slice(4..)).unwrap();
        assert_eq!(decoded.api_key, ApiKey::Metadata);
        assert_eq!(decoded.header.request_api_version, 12);
        assert_eq!(decoded.header.correlation_id, 7);
        assert_eq!(decoded.header.client_id.as_deref(), Some("c"));
        assert_eq!(decoded.body, RequestKind::Metadata(req));
        // A version the message does not have is refused before anything is written.
        assert!(encode_request(&MetadataRequest::default(), 99, 1, None).is_err());
    }

    #[test]
    fn a_response_frame_decodes_to_the_typed_response() {
        let resp = MetadataResponse::default().with_controller_id(BrokerId(3));
        let mut out = BytesMut::new();
        let kind = ResponseKind::Metadata(resp.clone());
        frame::encode_response(9, ApiKey::Metadata, 12, &kind, &mut out).unwrap();
        let body = out.freeze().slice(4..);
        assert_eq!(
            decode_response::<MetadataRequest>(body.clone(), 12).unwrap(),
            resp
        );
        // A frame cut short: an error, not a panic.
        let short = body.slice(..body.len() - 1);
        assert!(decode_response::<MetadataRequest>(short, 12).is_err());
        // ApiVersions at v3 answered in v0 layout with UNSUPPORTED_VERSION (KIP-511).
        let v0 = ApiVersionsResponse::default().with_error_code(35);
        let mut out = BytesMut::new();
        let kind = ResponseKind::ApiVersions(v0.clone());
        frame::encode_response(1, ApiKey::ApiVersions, 0, &kind, &mut out).unwrap();
        let got = decode_response::<ApiVersionsRequest>(out.freeze().slice(4..), 3).unwrap();
        assert_eq!(got, v0);
    }
}
