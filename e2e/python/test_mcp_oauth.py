"""An MCPRoute as an OAuth 2.1 resource server, seen by the official MCP
Python SDK: its discovery helpers read the gateway's 401 challenge and
Protected Resource Metadata (RFC 9728), and an SDK session with a static
bearer token lists and calls the demo tools.

The tokens are signed here with an RSA key made for the test run; a small
JWKS server on 127.0.0.1 publishes its public half. The gateway fetches the
keys from it, as it would from an identity provider. PyJWT and
cryptography are the MCP SDK's own dependencies, pinned in requirements.txt.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
)
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url

from conftest import Gateway, start_gateway
from mcp_support import mcp_client, run_mcp

KID = "e2e-key"
SCOPE = "mcp:tools"

CONFIG = """\
apiVersion: sluice.dev/v1alpha1
kind: AIGateway
metadata: {name: default}
spec:
  listen: 127.0.0.1:${SLUICE_PORT}
  admin: 127.0.0.1:${SLUICE_ADMIN_PORT}
---
apiVersion: sluice.dev/v1alpha1
kind: Backend
metadata: {name: demo}
spec: {provider: Demo}
---
apiVersion: sluice.dev/v1alpha1
kind: MCPRoute
metadata: {name: tools}
spec:
  path: /mcp
  prefixMode: Conditional
  backends: [{backend: demo}]
  auth:
    oauth:
      issuer: "${ISSUER}"
      audiences: ["http://127.0.0.1:${SLUICE_PORT}/mcp"]
      jwksUri: "${ISSUER}/jwks"
      scopes: ["mcp:tools"]
      tenantClaim: org
"""


class Jwks:
    """A JWKS endpoint for one freshly made RSA key, and tokens signed by it."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, audience: str, **claims: object) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": audience, "sub": "alice", "org": "team-oauth",
                   "scope": f"openid {SCOPE}", "iat": now, "exp": now + 300, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": KID})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def oauth(sluice_bin: Path, tmp_path: Path) -> Iterator[tuple[Jwks, Gateway]]:
    jwks = Jwks()
    gateway = start_gateway(sluice_bin, tmp_path, CONFIG, env={"ISSUER": jwks.issuer})
    try:
        yield jwks, gateway
    finally:
        gateway.process.stop()
        jwks.stop()


def test_the_sdk_discovers_the_authorization_server(oauth: tuple[Jwks, Gateway]) -> None:
    jwks, gateway = oauth
    server_url = f"{gateway.url}/mcp"
    refused = httpx.post(
        server_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        headers={"accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert refused.status_code == 401
    metadata_url = extract_resource_metadata_from_www_auth(refused)
    assert metadata_url == f"{gateway.url}/.well-known/oauth-protected-resource/mcp"
    assert extract_scope_from_www_auth(refused) == SCOPE

    # Every URL the SDK would try answers with the same document.
    for url in build_protected_resource_metadata_discovery_urls(metadata_url, server_url):
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, url
        metadata = ProtectedResourceMetadata.model_validate_json(response.content)
        assert [str(s).rstrip("/") for s in metadata.authorization_servers] == [jwks.issuer]
        assert metadata.scopes_supported == [SCOPE]
        assert check_resource_allowed(resource_url_from_server_url(server_url), str(metadata.resource))

    # A token without the scope: 403, and the scope to ask for (step-up).
    narrow = jwks.token(server_url, scope="openid")
    forbidden = httpx.post(
        server_url,
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        headers={"authorization": f"Bearer {narrow}"},
        timeout=10,
    )
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
    assert extract_scope_from_www_auth(forbidden) == SCOPE
    assert extract_resource_metadata_from_www_auth(forbidden) == metadata_url


def test_an_sdk_session_with_a_token_uses_the_tools(oauth: tuple[Jwks, Gateway]) -> None:
    jwks, gateway = oauth
    server_url = f"{gateway.url}/mcp"
    token = jwks.token(server_url)

    async def body() -> str:
        headers = {"authorization": f"Bearer {token}", "x-session-id": "oauth-e2e"}
        async with mcp_client(server_url, headers=headers) as client:
            names = [t.name for t in await client.tools()]
            assert names == ["search-flight", "list-events", "create-event"]
            return await client.call_text(
                "search-flight", {"origin": "New York", "destination": "Los Angeles", "date": "31/12/2026"}
            )

    assert "AF123" in run_mcp(body)
    line = gateway.wait_for_log(lambda l: l.get("tool") == "search-flight")
    assert line["tenant"] == "team-oauth"
    assert line["session_id"] == "oauth-e2e"
    assert token not in gateway.log_text()

    # The same SDK without the token is refused.
    async def anonymous() -> None:
        async with mcp_client(server_url):
            pass

    with pytest.raises(AssertionError, match="401"):
        run_mcp(anonymous)
