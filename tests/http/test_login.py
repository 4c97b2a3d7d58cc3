"""Login: basic auth, JSESSIONID sessions, form login, logout, alias tokens, the public health path."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dicomd.auth import Auth, hash_password, verify_password
from tests.http.conftest import PASSWORD, Site


def test_password_hash_is_a_salted_kdf() -> None:
    first, second = hash_password("pw-123456"), hash_password("pw-123456")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("pw-123456", first)
    assert not verify_password("pw-1234567", first)
    assert not verify_password("pw-123456", "garbage")


def test_every_path_but_health_needs_login(site: Site) -> None:
    anonymous = TestClient(site.client.app)
    assert anonymous.get("/health").status_code == 200
    for path in ("/", "/data/prearchive", "/data/projects", "/xapi/dicom_mappings", "/openapi.json",
                 "/data/auth", "/data/JSESSION", "/data/services/dicomdump?src=x", "/docs"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
    assert anonymous.post("/data/services/import?project=demo", content=b"x").status_code == 401
    assert anonymous.head("/data/projects").status_code == 401
    head = site.as_user("collab").head("/data/projects?format=json")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0


def test_basic_auth_and_wrong_password(site: Site) -> None:
    assert site.as_user("member").get("/data/auth").text == "User 'member' is logged in"
    bad = TestClient(site.client.app)
    bad.auth = ("member", "wrong-password")
    assert bad.get("/data/auth").status_code == 401
    nobody = TestClient(site.client.app)
    nobody.auth = ("nobody", PASSWORD)
    assert nobody.get("/data/auth").status_code == 401


def test_jsession_cookie_then_logout(site: Site) -> None:
    client = site.as_user("owner")
    session_id = client.get("/data/JSESSION").text
    assert len(session_id) == 32 and client.cookies.get("JSESSIONID") == session_id
    # Given only the cookie, the session works; the same id is returned again
    cookie_only = TestClient(site.client.app, cookies={"JSESSIONID": session_id})
    assert cookie_only.get("/data/auth").text == "User 'owner' is logged in"
    assert cookie_only.get("/data/JSESSION").text == session_id
    # When logging out, the cookie stops working
    assert cookie_only.delete("/data/JSESSION").status_code == 200
    again = TestClient(site.client.app, cookies={"JSESSIONID": session_id})
    assert again.get("/data/auth").status_code == 401


def test_form_login_as_xnatpy_does(site: Site) -> None:
    client = TestClient(site.client.app)
    response = client.put("/data/services/auth", data={"username": "collab", "password": PASSWORD})
    assert response.status_code == 200
    session_id = response.text
    assert client.cookies.get("JSESSIONID") == session_id
    assert client.get("/data/auth").text == "User 'collab' is logged in"
    failed = TestClient(site.client.app).put("/data/services/auth", data={"username": "collab", "password": "no"})
    assert failed.status_code == 401 and failed.text == "Authentication failed."


def test_alias_token_works_as_basic_auth_and_expires(site: Site) -> None:
    token = site.as_user("member").get("/data/services/tokens/issue").json()
    assert {"alias", "secret", "estimatedExpirationTime"} <= set(token)
    client = TestClient(site.client.app)
    client.auth = (token["alias"], token["secret"])
    assert client.get("/data/auth").text == "User 'member' is logged in"
    # GET / with a token hands out a JSESSIONID (xnatpy's token login reads it from there)
    assert client.get("/").cookies.get("JSESSIONID")
    # An expired token is refused
    auth = Auth(site.stores.catalog)
    user = auth.user("member")
    expired = auth.issue_token(user, lifetime=-1)
    stale = TestClient(site.client.app)
    stale.auth = (expired.alias, expired.secret)
    assert stale.get("/data/auth").status_code == 401
    # A revoked token is refused
    assert site.as_user("member").get(
        f"/data/services/tokens/invalidate/{token['alias']}/{token['secret']}").status_code == 200
    fresh = TestClient(site.client.app)
    fresh.auth = (token["alias"], token["secret"])
    assert fresh.get("/data/auth").status_code == 401


def test_version_and_build_info(site: Site) -> None:
    client = site.as_user("collab")
    assert client.get("/xapi/siteConfig/buildInfo?format=json").json()["version"].startswith("1.8.")
    assert client.get("/data/version").text.startswith("1.8.")
    page = client.get("/")
    assert page.status_code == 200 and "collab" in page.text
    assert client.get("/openapi.json").json()["paths"]["/data/services/import"]


def test_session_expiry(site: Site) -> None:
    auth = Auth(site.stores.catalog, session_idle=-1)
    session_id = auth.open_session(auth.user("admin"))
    assert auth.session_user(session_id) is None
