# Signing SYNAPSE bearer tokens from bash (sourced by run.sh and schemathesis.sh).
#
# The services verify HS256 JWTs with `sub`, `role`, `iss`, `aud`, `exp`
# (shared/src/auth/token.rs); this signs one with openssl. Reads JWT_SECRET, and
# JWT_ISSUER / JWT_AUDIENCE / TOKEN_TTL_SECONDS with the services' defaults.

base64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# sign_token SUBJECT ROLE: an HS256 JWT with the claims the services require.
sign_token() {
    local now header payload signature
    now=$(date +%s)
    header=$(printf '{"alg":"HS256","typ":"JWT"}' | base64url)
    payload=$(printf '{"sub":"%s","role":"%s","iss":"%s","aud":"%s","exp":%d,"iat":%d}' \
        "$1" "$2" "${JWT_ISSUER:-synapse}" "${JWT_AUDIENCE:-synapse-api}" \
        $((now + ${TOKEN_TTL_SECONDS:-3600})) "$now" | base64url)
    signature=$(printf '%s.%s' "$header" "$payload" |
        openssl dgst -sha256 -mac HMAC -macopt "key:$JWT_SECRET" -binary | base64url)
    printf '%s.%s.%s' "$header" "$payload" "$signature"
}
