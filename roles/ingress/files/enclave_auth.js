// The SHA-256 of the bearer key a client presents, as 64 hex digits, or ""
// when there is none. nginx maps the hash to the client's name
// ($enclave_client), so the configuration holds hashes only and a key never
// appears in a file, a log line or vLLM's request.
import crypto from 'crypto';

// RFC 6750 b64token characters, bounded so a huge header costs nothing.
const BEARER = /^Bearer ([A-Za-z0-9\-._~+\/]{16,512}=*)$/;

function key_sha256(r) {
    const match = BEARER.exec(r.headersIn['Authorization'] || '');
    return match ? crypto.createHash('sha256').update(match[1]).digest('hex') : '';
}

export default { key_sha256 };
