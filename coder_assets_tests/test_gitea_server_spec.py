"""The Gitea test server answers as Gitea 1.27.1's swagger spec says, and serves real git clones.

Every JSON body is validated against the response schema the spec declares for that path, method and
status (Swagger 2.0 schemas are draft-4 JSON Schema with `x-go-*` extensions), once as published and
once "strict", with `additionalProperties: false` added so that a misspelt or invented field fails.
The spec declares no body for 401 and for `#/responses/notFound`; those are checked against
`#/definitions/APIError`, the `{"message", "url"}` shape Gitea's `ctx.APIError` writes (and the
schema the spec itself uses for the 409 `EmptyRepository` response).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jsonschema
import pytest
import requests
from referencing import Registry
from referencing.jsonschema import DRAFT4

from coder_assets_tests.gitea_server import (
    API_PREFIX,
    API_ROUTES,
    DEFAULT_PAGING_NUM,
    GITEA_VERSION,
    MAX_RESPONSE_ITEMS,
    GiteaTestServer,
    Route,
    iter_link_header,
)

TOKEN = "gitea-test-token-not-a-secret"
AUTH = {"Authorization": f"token {TOKEN}"}
ORG = "homelab"
SPEC_NAME = "gitea-swagger-1.27.1.json"
SPEC_URI = "urn:gitea:swagger:1.27.1"
STRICT_URI = "urn:gitea:swagger:1.27.1:strict"
# Fields Gitea writes that the spec does not declare, with the reason in the server's code.
UNDECLARED_BUT_REAL = {"User": {"username": {"type": "string"}}}
# Pointer fields Gitea omits when unset (`json:",omitempty"`): not expected in every Repository.
REPOSITORY_OMITEMPTY = {"parent", "repo_transfer", "external_tracker", "external_wiki"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# -- spec loading and validation ---------------------------------------------------------------


SPEC_PATH = Path(__file__).parent / "data" / SPEC_NAME


@pytest.fixture(scope="session")
def swagger() -> dict[str, Any]:
    # A copy of Gitea 1.27.1's published swagger spec ships with the tests, so they never skip.
    path = SPEC_PATH
    return json.loads(path.read_text())


def _strict(spec: dict[str, Any]) -> dict[str, Any]:
    strict = copy.deepcopy(spec)
    for name, definition in strict["definitions"].items():
        if "properties" in definition:
            definition["properties"].update(UNDECLARED_BUT_REAL.get(name, {}))
            definition.setdefault("additionalProperties", False)
    return strict


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value)
    return RFC3339.match(value) is not None


class SpecValidator:
    """Finds the schema the spec declares for a response and validates bodies against it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.registry = Registry().with_resources(
            [
                (SPEC_URI, DRAFT4.create_resource(spec)),
                (STRICT_URI, DRAFT4.create_resource(_strict(spec))),
            ]
        )

    def operation(self, template: str, method: str) -> dict[str, Any]:
        return self.spec["paths"][template][method.lower()]

    def response(self, template: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
        """(JSON pointer, response object) the spec declares, following `#/responses/` refs."""
        declared = self.operation(template, method)["responses"][str(status)]
        if "$ref" in declared:
            pointer = declared["$ref"]
            name = pointer.removeprefix("#/responses/")
            return pointer, self.spec["responses"][name]
        escaped = template.replace("~", "~0").replace("/", "~1")
        return f"#/paths/{escaped}/{method.lower()}/responses/{status}", declared

    def schema_pointer(self, template: str, method: str, status: int) -> str:
        responses = self.operation(template, method)["responses"]
        if str(status) in responses:
            pointer, declared = self.response(template, method, status)
            if "schema" in declared:
                return f"{pointer}/schema"
        assert status >= 400, f"{method} {template} {status}: the spec declares no body schema"
        return "#/definitions/APIError"

    def validate(self, template: str, method: str, response: requests.Response) -> Any:
        body = response.json()
        assert response.headers["Content-Type"].startswith("application/json")
        pointer = self.schema_pointer(template, method, response.status_code)
        for uri in (SPEC_URI, STRICT_URI):
            validator = jsonschema.Draft4Validator(
                {"$ref": f"{uri}{pointer}"}, registry=self.registry, format_checker=FORMATS
            )
            errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
            assert not errors, (
                f"{method} {template} {response.status_code} vs {uri}{pointer}: "
                + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
            )
        return body


@pytest.fixture(scope="session")
def spec(swagger: dict[str, Any]) -> SpecValidator:
    return SpecValidator(swagger)


# -- git source repositories and the server ----------------------------------------------------


def git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "",
            "SSH_ASKPASS": "",
            "GIT_AUTHOR_NAME": "Ada Tester",
            "GIT_AUTHOR_EMAIL": "ada@homelab.test",
            "GIT_COMMITTER_NAME": "Ada Tester",
            "GIT_COMMITTER_EMAIL": "ada@homelab.test",
        }
    )
    return env


def run_git(*args: str | Path, cwd: Path | None = None, check: bool = True, **env: str):
    result = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        env={**git_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(map(str, args))}: {result.stderr}")
    return result


class SourceRepo:
    """A working git repository built with the git CLI, to be mirrored into the server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tick = 0
        run_git("init", "--quiet", "--initial-branch=main", path)

    def __fspath__(self) -> str:
        return str(self.path)

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        for name, text in (files or {f"{message.split()[0].lower()}.txt": message}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        run_git("add", "--all", cwd=self.path)
        self._tick += 1
        date = f"2026-01-01T12:{self._tick // 60:02d}:{self._tick % 60:02d}+01:00"
        run_git(
            "commit", "--quiet", "--allow-empty", "-m", message, cwd=self.path,
            GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date,
        )  # fmt: skip
        return self.head()

    def head(self, rev: str = "HEAD") -> str:
        return run_git("rev-parse", rev, cwd=self.path).stdout.strip()

    def checkout(self, branch: str, *, new: bool = False) -> None:
        run_git("checkout", "--quiet", *(["-b"] if new else []), branch, cwd=self.path)


@pytest.fixture
def make_source(tmp_path: Path) -> Callable[[str], SourceRepo]:
    def make(name: str) -> SourceRepo:
        repo = SourceRepo(tmp_path / "sources" / name)
        repo.commit(f"Initial {name}", {"README.md": f"# {name}\n", "src/app.py": "print(1)\n"})
        return repo

    return make


@pytest.fixture
def gitea(tmp_path: Path) -> Iterator[GiteaTestServer]:
    with GiteaTestServer(tmp_path / "gitea", token=TOKEN, org=ORG) as server:
        yield server


def api(server: GiteaTestServer, path: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("headers", AUTH)
    return requests.get(f"{server.base_url}{API_PREFIX}{path}", timeout=10, **kwargs)


def sample_path(route: Route) -> str:
    values = {"org": ORG, "owner": ORG, "repo": "alpha", "branch": "main"}
    return route.template.format(**{name: values[name] for name in route.path_params})


# -- the server's routes are the spec's operations ---------------------------------------------


def test_spec_base_path_is_the_served_api_prefix(spec: SpecValidator) -> None:
    assert spec.spec["swagger"] == "2.0"
    assert spec.spec["basePath"] == API_PREFIX
    assert spec.spec["info"]["version"] == GITEA_VERSION


@pytest.mark.parametrize("route", API_ROUTES, ids=lambda r: f"{r.method} {r.template}")
def test_every_served_route_is_a_spec_operation_with_declared_parameters(
    spec: SpecValidator, route: Route
) -> None:
    assert route.template in spec.spec["paths"], f"{route.template} is not a path in the spec"
    operation = spec.operation(route.template, route.method)
    parameters = operation.get("parameters", [])
    declared_query = {p["name"] for p in parameters if p["in"] == "query"}
    declared_path = {p["name"] for p in parameters if p["in"] == "path"}
    assert set(route.query) <= declared_query, set(route.query) - declared_query
    assert set(route.path_params) == declared_path
    assert "200" in operation["responses"]
    assert "application/json" in operation.get("produces", spec.spec["produces"])


def test_list_operations_declare_page_and_limit(spec: SpecValidator) -> None:
    for route in API_ROUTES:
        if route.template.endswith(("/repos", "/commits")):
            assert {"page", "limit"} <= set(route.query)
            names = {p["name"] for p in spec.operation(route.template, "GET")["parameters"]}
            assert {"page", "limit"} <= names


# -- response bodies validate against the declared schemas -------------------------------------


def test_org_repo_list_pages_validate_against_repository_list(
    spec: SpecValidator, gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo]
) -> None:
    names = ["alpha", "Bravo", "charlie", "delta", "echo", "foxtrot", "golf"]
    for name in names:
        gitea.add_repo(name, make_source(name) if name in ("alpha", "delta") else None)
    template = "/orgs/{org}/repos"

    seen: list[str] = []
    for page in (1, 2, 3):
        response = api(gitea, f"/orgs/{ORG}/repos", params={"page": page, "limit": 3})
        assert response.status_code == 200
        body = spec.validate(template, "GET", response)
        assert len(body) == (3 if page < 3 else 1)
        assert response.headers["X-Total-Count"] == "7"
        seen += [repo["name"] for repo in body]
    assert seen == sorted(names, key=str.lower)

    past_the_end = api(gitea, f"/orgs/{ORG}/repos", params={"page": 4, "limit": 3})
    assert spec.validate(template, "GET", past_the_end) == []
    assert past_the_end.headers["X-Total-Count"] == "7"


def test_paging_through_seven_repos_by_link_next_returns_three_pages_and_each_name_once(
    gitea: GiteaTestServer,
) -> None:
    names = [f"repo-{i}" for i in range(7)]
    for name in reversed(names):
        gitea.add_repo(name)
    url: str | None = f"{gitea.base_url}{API_PREFIX}/orgs/{ORG}/repos?limit=3"
    pages: list[list[str]] = []
    while url:
        response = requests.get(url, headers=AUTH, timeout=10)
        assert response.status_code == 200
        pages.append([repo["name"] for repo in response.json()])
        links = dict((rel, link) for link, rel in iter_link_header(response.headers["Link"]))
        url = links.get("next")
    assert len(pages) == 3
    assert sum(pages, []) == names
    assert all(TOKEN not in path for _, path in gitea.requests)


def test_link_header_has_gitea_rels_per_page(gitea: GiteaTestServer) -> None:
    for i in range(7):
        gitea.add_repo(f"r{i}")
    base = f"{gitea.base_url}{API_PREFIX}/orgs/{ORG}/repos"

    def rels(page: int) -> dict[str, str]:
        response = api(gitea, f"/orgs/{ORG}/repos", params={"page": page, "limit": 3})
        assert "Link" in response.headers["Access-Control-Expose-Headers"]
        return {rel: url for url, rel in iter_link_header(response.headers["Link"])}

    assert rels(1) == {
        "next": f"{base}?limit=3&page=2",
        "last": f"{base}?limit=3&page=3",
    }
    assert rels(2) == {
        "next": f"{base}?limit=3&page=3",
        "last": f"{base}?limit=3&page=3",
        "first": f"{base}?limit=3&page=1",
        "prev": f"{base}?limit=3&page=1",
    }
    assert rels(3) == {"first": f"{base}?limit=3&page=1", "prev": f"{base}?limit=3&page=2"}
    # One page holds everything: Gitea writes no Link header at all, but still X-Total-Count.
    single = api(gitea, f"/orgs/{ORG}/repos", params={"limit": 10})
    assert "Link" not in single.headers
    assert single.headers["X-Total-Count"] == "7"


def test_page_size_defaults_to_30_and_is_capped_at_50(gitea: GiteaTestServer) -> None:
    for i in range(MAX_RESPONSE_ITEMS + 1):
        gitea.add_repo(f"bulk-{i:02d}")
    assert len(api(gitea, f"/orgs/{ORG}/repos").json()) == DEFAULT_PAGING_NUM == 30
    assert len(api(gitea, f"/orgs/{ORG}/repos", params={"limit": 0}).json()) == 30
    capped = api(gitea, f"/orgs/{ORG}/repos", params={"limit": 500})
    assert len(capped.json()) == MAX_RESPONSE_ITEMS == 50
    assert capped.headers["X-Total-Count"] == "51"
    last = {rel: url for url, rel in iter_link_header(capped.headers["Link"])}["last"]
    assert parse_qs(urlsplit(last).query) == {"limit": ["500"], "page": ["2"]}


def test_repository_carries_every_spec_field_with_realistic_values(
    spec: SpecValidator, gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo]
) -> None:
    gitea.add_repo("alpha", make_source("alpha"), archived=True, mirror=True, private=False)
    response = api(gitea, f"/repos/{ORG}/alpha")
    assert response.status_code == 200
    repo = spec.validate("/repos/{owner}/{repo}", "GET", response)

    declared = set(spec.spec["definitions"]["Repository"]["properties"])
    assert set(repo) == declared - REPOSITORY_OMITEMPTY
    assert set(repo["owner"]) == set(spec.spec["definitions"]["User"]["properties"]) | {"username"}
    assert repo["full_name"] == f"{ORG}/alpha"
    assert repo["owner"]["login"] == ORG
    assert (repo["archived"], repo["mirror"], repo["private"], repo["empty"]) == (
        True,
        True,
        False,
        False,
    )
    assert repo["default_branch"] == "main"
    assert repo["clone_url"] == f"{gitea.base_url}/{ORG}/alpha.git"
    assert repo["html_url"] == f"{gitea.base_url}/{ORG}/alpha"
    assert repo["ssh_url"] == f"git@127.0.0.1:{ORG}/alpha.git"
    assert repo["permissions"] == {"admin": True, "push": True, "pull": True}
    assert repo["branch_count"] == 1
    assert repo["size"] >= 0


def test_repository_without_refs_is_empty(spec: SpecValidator, gitea: GiteaTestServer) -> None:
    gitea.add_repo("blank", default_branch="trunk")
    repo = spec.validate("/repos/{owner}/{repo}", "GET", api(gitea, f"/repos/{ORG}/blank"))
    assert repo["empty"] is True
    assert repo["default_branch"] == "trunk"
    assert repo["branch_count"] == 0


def test_branch_validates_and_reports_the_bare_repo_head(
    spec: SpecValidator, gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo]
) -> None:
    source = make_source("alpha")
    gitea.add_repo("alpha", source)
    template = "/repos/{owner}/{repo}/branches/{branch}"

    branch = spec.validate(template, "GET", api(gitea, f"/repos/{ORG}/alpha/branches/main"))
    assert branch["name"] == "main"
    assert branch["commit"]["id"] == source.head()
    assert branch["commit"]["message"] == "Initial alpha\n"
    assert branch["commit"]["author"]["email"] == "ada@homelab.test"
    assert branch["commit"]["timestamp"] == "2026-01-01T12:00:01+01:00"

    new_head = source.commit("Second change")
    source.checkout("feature/x", new=True)
    feature_head = source.commit("Feature work")
    gitea.push_from("alpha", source.path)
    moved = api(gitea, f"/repos/{ORG}/alpha/branches/main").json()
    assert moved["commit"]["id"] == new_head
    for path in ("feature/x", quote("feature/x", safe="")):
        feature = api(gitea, f"/repos/{ORG}/alpha/branches/{path}")
        assert spec.validate(template, "GET", feature)["commit"]["id"] == feature_head


def test_version_validates_against_server_version(
    spec: SpecValidator, gitea: GiteaTestServer
) -> None:
    body = spec.validate("/version", "GET", api(gitea, "/version"))
    assert body == {"version": GITEA_VERSION}


def test_commits_list_validates_and_carries_declared_paging_headers(
    spec: SpecValidator, gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo]
) -> None:
    source = make_source("alpha")
    shas = [source.head()] + [source.commit(f"Change {i}", {f"f{i}.txt": "x\n"}) for i in range(4)]
    gitea.add_repo("alpha", source)
    template = "/repos/{owner}/{repo}/commits"
    _, declared = spec.response(template, "GET", 200)

    response = api(gitea, f"/repos/{ORG}/alpha/commits", params={"limit": 2, "page": 2})
    body = spec.validate(template, "GET", response)
    assert [c["sha"] for c in body] == list(reversed(shas))[2:4]
    assert body[0]["parents"][0]["sha"] == shas[1]
    assert body[0]["files"] == [{"filename": "f1.txt", "status": "added"}]
    assert body[0]["stats"] == {"total": 1, "additions": 1, "deletions": 0}
    for name, header in declared["headers"].items():
        value = response.headers[name]
        if header["type"] == "integer":
            int(value)
        elif header["type"] == "boolean":
            assert value in ("true", "false")
    assert (response.headers["X-Total"], response.headers["X-PageCount"]) == ("5", "3")
    assert response.headers["X-HasMore"] == "true"
    assert response.headers["X-Total-Count"] == "5"
    assert {rel for _, rel in iter_link_header(response.headers["Link"])} == {
        "next", "last", "first", "prev",
    }  # fmt: skip

    lean = api(gitea, f"/repos/{ORG}/alpha/commits", params={"stat": "false", "files": "false"})
    assert all("stats" not in c and "files" not in c for c in spec.validate(template, "GET", lean))


def test_commits_of_an_empty_repo_answer_409_empty_repository(
    spec: SpecValidator, gitea: GiteaTestServer
) -> None:
    gitea.add_repo("blank")
    response = api(gitea, f"/repos/{ORG}/blank/commits")
    assert response.status_code == 409
    pointer = spec.schema_pointer("/repos/{owner}/{repo}/commits", "GET", 409)
    assert pointer == "#/responses/EmptyRepository/schema"
    assert spec.validate("/repos/{owner}/{repo}/commits", "GET", response)["message"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", API_ROUTES, ids=lambda r: f"{r.method} {r.template}")
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "token wrong"}, {"Authorization": f"Bearer {TOKEN}"}],
    ids=["missing", "wrong-token", "bearer-scheme"],
)
def test_every_route_refuses_a_missing_or_wrong_token_with_401(
    spec: SpecValidator, gitea: GiteaTestServer, route: Route, headers: dict[str, str]
) -> None:
    gitea.add_repo("alpha")
    response = api(gitea, sample_path(route), headers=headers)
    assert response.status_code == 401
    body = spec.validate(route.template, route.method, response)
    assert body["url"] == f"{gitea.base_url}/api/swagger"
    assert body["message"]


@pytest.mark.parametrize("param", ["token", "access_token"])
@pytest.mark.parametrize("with_header", [False, True])
def test_token_in_query_string_is_refused(
    spec: SpecValidator, gitea: GiteaTestServer, param: str, with_header: bool
) -> None:
    response = api(gitea, "/version", params={param: TOKEN}, headers=AUTH if with_header else {})
    assert response.status_code == 401
    assert "query string" in spec.validate("/version", "GET", response)["message"]


def test_basic_auth_with_token_as_password_is_accepted(gitea: GiteaTestServer) -> None:
    assert api(gitea, "/version", headers={}, auth=("ci-bot", TOKEN)).status_code == 200
    assert api(gitea, "/version", headers={}, auth=("ci-bot", "nope")).status_code == 401
    assert api(gitea, "/version", headers={}, auth=(TOKEN, "")).status_code == 401


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/orgs/{org}/repos", "/orgs/nobody/repos"),
        ("/repos/{owner}/{repo}", f"/repos/{ORG}/missing"),
        ("/repos/{owner}/{repo}", "/repos/nobody/alpha"),
        ("/repos/{owner}/{repo}/branches/{branch}", f"/repos/{ORG}/alpha/branches/nope"),
        ("/repos/{owner}/{repo}/commits", f"/repos/{ORG}/alpha/commits?sha=nope"),
    ],
)
def test_unknown_org_repo_or_branch_answers_404_in_gitea_error_shape(
    spec: SpecValidator,
    gitea: GiteaTestServer,
    make_source: Callable[[str], SourceRepo],
    template: str,
    path: str,
) -> None:
    gitea.add_repo("alpha", make_source("alpha"))
    response = api(gitea, path)
    assert response.status_code == 404
    assert "404" in spec.operation(template, "GET")["responses"]
    assert set(spec.validate(template, "GET", response)) == {"message", "url"}


def test_fail_next_makes_the_next_requests_fail_then_recovers(
    spec: SpecValidator, gitea: GiteaTestServer
) -> None:
    gitea.fail_next(2)
    for _ in range(2):
        response = api(gitea, "/version")
        assert response.status_code == 500
        spec.validate("/version", "GET", response)
    assert api(gitea, "/version").status_code == 200
    gitea.fail_next(1, status=503)
    assert api(gitea, "/version").status_code == 503
    assert api(gitea, "/version").status_code == 200


def test_requests_and_authorization_headers_are_recorded(gitea: GiteaTestServer) -> None:
    api(gitea, "/version")
    api(gitea, "/version", headers={})
    assert gitea.requests == [("GET", "/api/v1/version")] * 2
    assert gitea.seen_authorization == [f"token {TOKEN}", None]


def test_removed_repo_disappears_from_api_and_disk(gitea: GiteaTestServer) -> None:
    path = gitea.add_repo("alpha")
    gitea.add_repo("bravo")
    gitea.remove_repo("alpha")
    assert not path.exists()
    assert api(gitea, f"/repos/{ORG}/alpha").status_code == 404
    assert [r["name"] for r in api(gitea, f"/orgs/{ORG}/repos").json()] == ["bravo"]


def test_stop_is_idempotent_and_ends_serving(tmp_path: Path) -> None:
    server = GiteaTestServer(tmp_path / "g", token=TOKEN)
    base = server.start()
    assert requests.get(f"{base}{API_PREFIX}/version", headers=AUTH, timeout=5).ok
    server.stop()
    server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}{API_PREFIX}/version", headers=AUTH, timeout=5)


# -- git smart HTTP through git http-backend ---------------------------------------------------


def clone(server: GiteaTestServer, name: str, dest: Path, *args: str, header: str | None = None):
    extra = ["-c", f"http.extraHeader={header}"] if header else []
    url = f"{server.base_url}/{ORG}/{name}.git"
    return run_git(*extra, "clone", "--quiet", *args, url, dest, check=False)


def test_git_clone_and_fetch_work_with_the_token_header(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], tmp_path: Path
) -> None:
    source = make_source("alpha")
    gitea.add_repo("alpha", source)
    dest = tmp_path / "clone"
    result = clone(gitea, "alpha", dest, header=f"Authorization: token {TOKEN}")
    assert result.returncode == 0, result.stderr
    assert run_git("rev-parse", "HEAD", cwd=dest).stdout.strip() == source.head()
    assert (dest / "src" / "app.py").read_text() == "print(1)\n"

    new_head = source.commit("Second change")
    gitea.push_from("alpha", source.path)
    run_git("-c", f"http.extraHeader=Authorization: token {TOKEN}", "fetch", "--quiet", cwd=dest)
    assert run_git("rev-parse", "origin/main", cwd=dest).stdout.strip() == new_head
    assert any(path.endswith("/git-upload-pack") for _, path in gitea.requests)
    assert all(TOKEN not in path for _, path in gitea.requests)
    assert f"token {TOKEN}" in gitea.seen_authorization


def test_git_clone_without_credentials_gets_401(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], tmp_path: Path
) -> None:
    gitea.add_repo("alpha", make_source("alpha"))
    result = clone(gitea, "alpha", tmp_path / "clone")
    assert result.returncode != 0
    assert not (tmp_path / "clone" / "README.md").exists()
    wrong = clone(gitea, "alpha", tmp_path / "clone2", header="Authorization: token wrong")
    assert wrong.returncode != 0
    response = requests.get(
        f"{gitea.base_url}/{ORG}/alpha.git/info/refs",
        params={"service": "git-upload-pack"},
        timeout=10,
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Gitea"'


def test_git_clone_with_basic_auth_token_password_works(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], tmp_path: Path
) -> None:
    source = make_source("alpha")
    gitea.add_repo("alpha", source)
    basic = base64.b64encode(f"ci-bot:{TOKEN}".encode()).decode()
    result = clone(gitea, "alpha", tmp_path / "clone", header=f"Authorization: Basic {basic}")
    assert result.returncode == 0, result.stderr
    assert run_git("rev-parse", "HEAD", cwd=tmp_path / "clone").stdout.strip() == source.head()


def test_blobless_partial_clone_is_served(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], tmp_path: Path
) -> None:
    gitea.add_repo("alpha", make_source("alpha"))
    dest = tmp_path / "blobless"
    header = f"Authorization: token {TOKEN}"
    result = clone(gitea, "alpha", dest, "--bare", "--filter=blob:none", header=header)
    assert result.returncode == 0, result.stderr
    assert run_git("config", "remote.origin.promisor", cwd=dest).stdout.strip() == "true"


def test_push_is_refused_with_403(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], tmp_path: Path
) -> None:
    gitea.add_repo("alpha", make_source("alpha"))
    for service in ("info/refs?service=git-receive-pack", "git-receive-pack"):
        method = "GET" if service.startswith("info") else "POST"
        url = f"{gitea.base_url}/{ORG}/alpha.git/{service}"
        assert requests.request(method, url, headers=AUTH, timeout=10).status_code == 403
    dest = tmp_path / "clone"
    clone(gitea, "alpha", dest, header=f"Authorization: token {TOKEN}")
    run_git("commit", "--quiet", "--allow-empty", "-m", "nope", cwd=dest)
    pushed = run_git(
        "-c", f"http.extraHeader=Authorization: token {TOKEN}", "push", "origin", "main",
        cwd=dest, check=False,
    )  # fmt: skip
    assert pushed.returncode != 0
    assert "403" in pushed.stderr


def pkt_line(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_gzip_request_body_and_protocol_v2_reach_http_backend(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], chunked: bool
) -> None:
    source = make_source("alpha")
    gitea.add_repo("alpha", source)
    request = (
        pkt_line(b"command=ls-refs\n")
        + pkt_line(b"object-format=sha1\n")
        + b"0001"
        + pkt_line(b"ref-prefix refs/heads/\n")
        + b"0000"
    )
    compressed = gzip.compress(request)
    response = requests.post(
        f"{gitea.base_url}/{ORG}/alpha.git/git-upload-pack",
        data=iter([compressed]) if chunked else compressed,
        headers={
            **AUTH,
            "Content-Type": "application/x-git-upload-pack-request",
            "Accept": "application/x-git-upload-pack-result",
            "Content-Encoding": "gzip",
            "Git-Protocol": "version=2",
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-git-upload-pack-result"
    assert f"{source.head()} refs/heads/main\n".encode() in response.content


def test_git_fetch_with_a_large_negotiation_sends_gzip_and_succeeds(
    gitea: GiteaTestServer, make_source: Callable[[str], SourceRepo], tmp_path: Path
) -> None:
    source = make_source("alpha")
    gitea.add_repo("alpha", source)
    dest = tmp_path / "clone"
    header = f"Authorization: token {TOKEN}"
    assert clone(gitea, "alpha", dest, header=header).returncode == 0
    # Local commits the server has never seen make the client send many "have" lines, so the
    # upload-pack request grows past git's 1 KiB gzip threshold.
    for i in range(40):
        run_git("commit", "--quiet", "--allow-empty", "-m", f"local {i}", cwd=dest)
    new_head = source.commit("Upstream change")
    gitea.push_from("alpha", source.path)
    trace = tmp_path / "curl-trace.txt"
    run_git("-c", f"http.extraHeader={header}", "fetch", "--quiet", cwd=dest,
            GIT_TRACE_CURL=str(trace), GIT_TRACE_CURL_NO_DATA="1")  # fmt: skip
    assert run_git("rev-parse", "origin/main", cwd=dest).stdout.strip() == new_head
    assert "Content-Encoding: gzip" in trace.read_text()
    assert TOKEN not in trace.read_text()
