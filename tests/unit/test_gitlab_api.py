"""GitLabAPI against the GitLab STAND-IN (tests/standins/gitlab_api.py): real HTTP on loopback."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from berth.errors import BerthError, ConfigError
from berth.gitlab.api import CreatedRunner, GitLabAPI, GitLabAPIError, is_created_runner_token, is_registration_token
from berth.redact import redact

try:
    from tests.standins.gitlab_api import GitLabStandIn, routable_token
except ModuleNotFoundError:  # pytest started without the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.standins.gitlab_api import GitLabStandIn, routable_token

# Marker secrets: no message, repr or traceback may contain them.
PAT = "glpat-MARKERpat7Qx9"
RUNNER_TOKEN = "glrt-MARKERrunner4Kd2"
REGISTRATION_TOKEN = "GR1348941MARKERreg8Zp"
MARKERS = (PAT, RUNNER_TOKEN, REGISTRATION_TOKEN, "MARKER")
SYSTEM_ID = "s_0123456789ab"


# The HTTP Router's rule for runner tokens (gitlabhq doc/development/cells/routable_tokens.md).
ROUTABLE_RUNNER_TOKEN = re.compile(r"^glrtr?-[0-9A-Za-z_-]{27,300}\.01\.[0-9a-z]{2}[0-9a-z]{7}$")


@pytest.fixture
def gl():
    # GitLab has group 7 and projects 1 and 42 (the token's user may create runners in them) and group 8
    # (it may not).
    with GitLabStandIn(access_token=PAT, groups={7: True, 8: False}, projects={1: True, 42: True}) as standin:
        yield standin


def raw(gl: GitLabStandIn, method: str, path: str, form: dict, private_token: str | None = None):
    """A request as any client sends it: (status, JSON body), to pin the stand-in's answers themselves."""
    request = urllib.request.Request(gl.url + path, data=urlencode(form).encode(), method=method)
    if private_token:
        request.add_header("PRIVATE-TOKEN", private_token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, json.loads(body) if body else None


def assert_no_secret(exc: BaseException) -> None:
    # What an operator could see: the message, the repr, and any chained exception shown in a traceback.
    texts = [str(exc), repr(exc), *traceback.format_exception_only(exc)]
    assert exc.__cause__ is None
    if exc.__context__ is not None and not exc.__suppress_context__:
        texts += [str(exc.__context__), repr(exc.__context__)]
    for text in texts:
        for marker in MARKERS:
            assert marker not in text


# -- create ----------------------------------------------------------------------------------------


def test_create_runner_returns_the_new_token(gl):
    created = GitLabAPI(gl.url, PAT).create_runner(
        runner_type="project_type", project_id=42, tag_list=["docker", "linux"], run_untagged=False,
        description="build host",
    )  # fmt: skip
    assert isinstance(created, CreatedRunner)
    assert created.token.startswith("glrt-")
    assert ROUTABLE_RUNNER_TOKEN.match(created.token)      # as current GitLab makes them, dots included
    assert created.id == 1
    assert created.token not in repr(created)
    [request] = gl.created
    assert request.private_token_sent
    form = dict(request.form)
    assert re.fullmatch(r"berth-create:[0-9a-f]{16}", form.pop("maintenance_note"))  # finds an unanswered create
    assert form == {
        "runner_type": "project_type",
        "project_id": "42",
        "tag_list": "docker,linux",
        "run_untagged": "false",
        "description": "build host",
    }


def test_create_runner_passes_expiry_and_omits_unset_params(gl):
    gl.token_expires_at = "2026-03-01T00:00:00.000Z"
    created = GitLabAPI(gl.url, PAT).create_runner(runner_type="group_type", group_id=7, project_id=9)
    assert created.token_expires_at == "2026-03-01T00:00:00.000Z"
    form = dict(gl.created[0].form)
    assert form.pop("maintenance_note").startswith("berth-create:")
    assert form == {"runner_type": "group_type", "group_id": "7"}  # project_id not for groups


def test_401_wrong_access_token_names_the_fix_and_creates_nothing(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, "glpat-MARKERwrong").create_runner(runner_type="instance_type")
    assert caught.value.status == 401
    assert str(caught.value) == (
        f"GitLab at {gl.url} refused the access token (401): "
        "set a token with scope create_runner in GITLAB_TOKEN"
    )
    assert_no_secret(caught.value)
    assert gl.runners == {}


def test_403_token_without_create_runner_scope(gl):
    gl.scopes = ("read_api",)
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, PAT).create_runner(runner_type="project_type", project_id=1)
    assert caught.value.status == 403
    assert "create_runner" in str(caught.value)
    assert "insufficient_scope" in str(caught.value)  # GitLab's own words are passed on
    assert_no_secret(caught.value)
    assert gl.runners == {}


def test_403_instance_runner_needs_an_administrator(gl):
    gl.admin = False
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, PAT).create_runner(runner_type="instance_type")
    assert caught.value.status == 403
    assert "administrator" in str(caught.value)
    assert gl.runners == {}


def test_400_from_gitlab_is_reported_with_its_message(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, PAT).create_runner(runner_type="project_type", project_id="not-a-number")  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert "project_id is invalid" in str(caught.value)      # Grape's words for a non-integer


def test_a_group_gitlab_does_not_have_is_400_and_creates_nothing(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, PAT).create_runner(runner_type="group_type", group_id=99)
    assert caught.value.status == 400
    assert str(caught.value) == (
        f"GitLab at {gl.url} rejected the request to /api/v4/user/runners (400): "
        "GitLab said '400 Bad request - Missing/invalid group'"
    )
    assert gl.runners == {}


def test_a_group_the_user_may_not_create_runners_in_is_403(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, PAT).create_runner(runner_type="group_type", group_id=8)
    assert caught.value.status == 403
    assert "Insufficient permissions" in str(caught.value) and "Maintainer" in str(caught.value)
    assert gl.runners == {}


@pytest.mark.parametrize(("params", "problem"), [
    ({"runner_type": "instance_type", "maximum_timeout": 599}, "maximum_timeout must be at least 600"),
    ({"runner_type": "instance_type", "run_untagged": False}, "run_untagged false needs a tag_list"),
    ({"runner_type": "instance_type", "run_untagged": False, "tag_list": []}, "run_untagged false needs a tag_list"),
])
def test_runners_gitlab_would_refuse_are_refused_before_any_request(gl, params, problem):
    with pytest.raises(ConfigError, match=problem):
        GitLabAPI(gl.url, PAT).create_runner(**params)
    assert gl.requests == []


@pytest.mark.parametrize(("form", "message"), [
    ({"runner_type": "instance_type", "maximum_timeout": "599"},
     "400 Bad request - Maximum timeout needs to be at least 10 minutes"),
    ({"runner_type": "instance_type", "run_untagged": "false"},
     "400 Bad request - Tags list can not be empty when runner is not allowed to pick untagged jobs"),
    ({"runner_type": "project_type", "project_id": "5"}, "400 Bad request - Missing/invalid project"),
])
def test_standin_create_validations_answer_as_gitlab(gl, form, message):
    # gitlabhq create_runner_service.rb (strategy, then the model's validations) via lib/api/user_runners.rb.
    assert raw(gl, "POST", "/api/v4/user/runners", form, PAT) == (400, {"message": message})
    assert raw(gl, "POST", "/api/v4/user/runners", {}, PAT) == (
        400, {"error": "runner_type is missing, runner_type does not have a valid value"})
    assert gl.runners == {}


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"runner_type": "shared"}, "runner_type must be one of"),
        ({"runner_type": "group_type"}, "group_type needs group_id"),
        ({"runner_type": "project_type", "group_id": 3}, "project_type needs project_id"),
        ({"runner_type": "instance_type", "access_level": "protected"}, "access_level must be one of"),
    ],
)
def test_bad_create_params_are_refused_before_any_request(gl, params, problem):
    with pytest.raises(ConfigError, match=problem):
        GitLabAPI(gl.url, PAT).create_runner(**params)
    assert gl.requests == []


def test_create_without_access_token_sends_nothing(gl):
    with pytest.raises(GitLabAPIError, match="GITLAB_TOKEN"):
        GitLabAPI(gl.url, None).create_runner(runner_type="instance_type")
    assert gl.requests == []


def test_legacy_registration_gets_410_with_the_way_forward(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, None).register_runner_legacy(REGISTRATION_TOKEN, description="old way")
    assert caught.value.status == 410
    assert str(caught.value) == (
        "legacy registration tokens are disabled on this GitLab (410 Gone): "
        "create runners with a runner authentication token (glrt-)"
    )
    assert_no_secret(caught.value)
    assert gl.requests[0].form == {"token": "***", "description": "old way"}  # the stand-in logs no tokens


def test_legacy_registration_where_allowed_gives_a_glrtr_token():
    with GitLabStandIn(registration_token=REGISTRATION_TOKEN, allow_registration=True) as gl:
        created = GitLabAPI(gl.url, None).register_runner_legacy(REGISTRATION_TOKEN, description="old way")
        assert created.token.startswith("glrtr-") and ROUTABLE_RUNNER_TOKEN.match(created.token)
        assert gl.runner_by_token(created.token).params == {"description": "old way"}
        with pytest.raises(GitLabAPIError) as caught:
            GitLabAPI(gl.url, None).register_runner_legacy("GR1348941MARKERwrong")
    assert caught.value.status == 403
    assert str(caught.value) == (
        f"GitLab at {gl.url} refused the registration token (403): it is not valid there: "
        "GitLab said '403 Forbidden - invalid token supplied'"
    )
    assert_no_secret(caught.value)


def test_standin_disallowed_registration_is_410_for_any_token_and_403_for_none(gl):
    # gitlabhq register_runner_service.rb attrs_from_token: {} (-> 410) for any non-empty token when disallowed.
    assert raw(gl, "POST", "/api/v4/runners", {"token": "whatever"}) == (
        410, {"message": "410 Gone - runner registration disallowed"})
    assert raw(gl, "POST", "/api/v4/runners", {"token": ""}) == (
        403, {"message": "403 Forbidden - invalid token supplied"})


def test_token_kinds():
    # gitlab-runner network/gitlab.go TokenIsCreatedRunnerToken; gitlabhq runners_token_prefixable.rb.
    assert is_created_runner_token("glrt-abc") and is_created_runner_token(routable_token("glrt-", {"o": 1}))
    assert is_created_runner_token("mycompany-glrt-abc")      # behind an instance-wide token prefix
    assert not is_created_runner_token("glrtr-abc") and not is_created_runner_token("GR1348941abc")
    assert not is_created_runner_token("mycompany-glrtr-abc") and not is_created_runner_token("t1_abc")
    assert is_registration_token("GR1348941abc")
    assert not is_registration_token("glrtr-abc") and not is_registration_token("glrt-abc")


# -- no answer -------------------------------------------------------------------------------------


def test_timeout_is_reported_in_seconds():
    with GitLabStandIn(access_token=PAT, delay=5) as slow:
        api = GitLabAPI(slow.url, PAT, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(GitLabAPIError) as caught:
            api.create_runner(runner_type="instance_type")
        assert time.monotonic() - started < 3
    assert str(caught.value).startswith(f"GitLab at {slow.url} did not answer within 0.3s")
    assert caught.value.status is None
    assert_no_secret(caught.value)


def test_connection_refused():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(f"http://127.0.0.1:{port}", PAT, timeout=2).verify_runner(RUNNER_TOKEN, SYSTEM_ID)
    assert (
        str(caught.value)
        == f"GitLab at http://127.0.0.1:{port} did not answer within 2s (connection refused) (after 3 attempts)"
    )
    assert_no_secret(caught.value)


def test_bad_url_is_a_config_error():
    with pytest.raises(ConfigError, match="must start with https://"):
        GitLabAPI("gitlab.example.com", PAT)


def test_error_is_a_berth_error_with_status():
    assert issubclass(GitLabAPIError, BerthError)
    assert GitLabAPIError("x", status=418).status == 418


# -- runner-token endpoints ------------------------------------------------------------------------


def test_verify_known_token(gl):
    runner = gl.add_runner(token=RUNNER_TOKEN)
    answer = GitLabAPI(gl.url, None).verify_runner(RUNNER_TOKEN, SYSTEM_ID)
    assert answer["id"] == runner.id
    assert runner.managers == {SYSTEM_ID}
    assert gl.requests[0].form == {"token": "***", "system_id": SYSTEM_ID}
    assert not gl.requests[0].private_token_sent  # the runner token authenticates, not the PAT


def test_verify_unknown_token_is_403_without_the_token(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, PAT).verify_runner(RUNNER_TOKEN, SYSTEM_ID)
    assert caught.value.status == 403
    assert "refused the runner token (403)" in str(caught.value)
    assert_no_secret(caught.value)


def test_verify_without_system_id_is_200_for_the_legacy_manager(gl):
    # lib/api/ci/runner.rb: system_id is optional; lib/api/ci/helpers/runner.rb LEGACY_SYSTEM_XID.
    runner = gl.add_runner(token=RUNNER_TOKEN)
    assert GitLabAPI(gl.url, None).verify_runner(RUNNER_TOKEN, None)["id"] == runner.id
    assert gl.requests[0].form == {"token": "***"}
    assert runner.managers == {"<legacy>"}


def test_delete_runner_manager_removes_only_this_host(gl):
    runner = gl.add_runner(token=RUNNER_TOKEN)
    api = GitLabAPI(gl.url, None)
    api.verify_runner(RUNNER_TOKEN, SYSTEM_ID)
    api.verify_runner(RUNNER_TOKEN, "s_other0000000")
    api.delete_runner_manager(RUNNER_TOKEN, SYSTEM_ID)
    assert runner.managers == {"s_other0000000"}
    assert gl.runner_by_token(RUNNER_TOKEN) is runner


def test_unknown_runner_manager_is_404_runner_manager_not_found(gl):
    gl.add_runner(token=RUNNER_TOKEN)
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, None).delete_runner_manager(RUNNER_TOKEN, SYSTEM_ID)
    assert caught.value.status == 404
    assert str(caught.value) == (
        f"GitLab at {gl.url} answered 404 Runner manager not found: the runner has no manager with this host's "
        f"system ID {SYSTEM_ID} (it never ran here, or it was already unregistered), so there is nothing to "
        "unregister"
    )
    assert_no_secret(caught.value)
    assert raw(gl, "DELETE", "/api/v4/runners/managers", {"token": RUNNER_TOKEN, "system_id": "x"}) == (
        404, {"message": "404 Runner manager not found Not Found"})          # lib/api/helpers.rb not_found!
    assert raw(gl, "DELETE", "/api/v4/runners/managers", {"token": RUNNER_TOKEN}) == (
        400, {"error": "system_id is missing"})


def test_delete_runner_manager_with_an_invalid_token_is_403(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url, None).delete_runner_manager(RUNNER_TOKEN, SYSTEM_ID)
    assert caught.value.status == 403
    assert "refused the runner token (403)" in str(caught.value)
    assert_no_secret(caught.value)


def test_unregister_removes_the_manager_of_a_glrt_runner_and_deletes_any_other(gl):
    # gitlab-runner commands/unregister.go unregisterRunner: managers only for glrt- tokens.
    shared = gl.add_runner(token=RUNNER_TOKEN)
    registered = gl.add_runner("instance_type", registered=True)
    api = GitLabAPI(gl.url, None)
    for token in (RUNNER_TOKEN, registered.token):
        api.verify_runner(token, SYSTEM_ID)
    api.verify_runner(RUNNER_TOKEN, "s_other0000000")
    assert api.unregister_runner(RUNNER_TOKEN, SYSTEM_ID) == f"unregistered this host's runner manager ({SYSTEM_ID})"
    assert gl.runner_by_token(RUNNER_TOKEN) is shared and shared.managers == {"s_other0000000"}
    assert api.unregister_runner(registered.token, SYSTEM_ID).startswith("unregistered: deleted in GitLab")
    assert gl.runner_by_token(registered.token) is None
    assert [(r.method, r.path) for r in gl.requests[-2:]] == [
        ("DELETE", "/api/v4/runners/managers"), ("DELETE", "/api/v4/runners")]


def test_delete_runner(gl):
    gl.add_runner(token=RUNNER_TOKEN)
    api = GitLabAPI(gl.url, None)
    api.delete_runner(RUNNER_TOKEN)
    assert gl.runners == {}
    with pytest.raises(GitLabAPIError) as caught:
        api.delete_runner(RUNNER_TOKEN)
    assert caught.value.status == 403
    assert_no_secret(caught.value)


def test_created_runner_can_be_verified_and_deleted(gl):
    api = GitLabAPI(gl.url, PAT)
    created = api.create_runner(runner_type="instance_type")
    assert api.verify_runner(created.token, SYSTEM_ID)["id"] == created.id
    api.delete_runner(created.token)
    assert gl.runners == {}


def test_unknown_path_404_explains(gl):
    with pytest.raises(GitLabAPIError) as caught:
        GitLabAPI(gl.url + "/wrong-prefix", PAT).create_runner(runner_type="instance_type")
    assert caught.value.status == 404
    assert "15.11" in str(caught.value)


def test_api_repr_has_no_token():
    assert PAT not in repr(GitLabAPI("https://gitlab.example.com", PAT))


# -- redact ----------------------------------------------------------------------------------------


def test_redact_masks_routable_tokens_whole_and_every_gitlab_prefix():
    routable = routable_token("glrt-", {"c": 1, "o": 1, "t": 3, "u": 1})
    assert redact(f"token {routable}. Next") == "token glrt-***. Next"
    kinds = ["glrtr-", "glpat-", "gloas-", "gldt-", "glcbt-", "glptt-", "glft-", "glimt-", "glagent-", "glsoat-",
             "glffct-", "gltok-"]
    text = " ".join(f"{k}abc_DEF-1.01.0abcdefghi" for k in kinds)
    assert redact(text) == " ".join(f"{k}***" for k in kinds)


def test_redact_masks_given_secrets_and_token_shapes():
    text = f"pat={PAT} runner {RUNNER_TOKEN} other glrt-abc_DEF-123 and glpat-xyz; pw hunter22 (hunter22)"
    out = redact(text, ["hunter22", None, ""])
    assert out == "pat=glpat-*** runner glrt-*** other glrt-*** and glpat-***; pw *** (***)"


def test_redact_ignores_short_secrets_and_masks_url_encoded_ones():
    assert redact("a b abc", ["a", "abc"]) == "a b abc"
    assert redact("token=p%40ss%2Fword", ["p@ss/word"]) == "token=***"


# -- retries where they are safe (berth/gitlab/api.py; the stand-in's faults) ----------------------------------


def quick(url: str, token: str | None = PAT, **kwargs: float) -> GitLabAPI:
    return GitLabAPI(url, token, retry_wait=0.01, **kwargs)


def test_verify_after_a_500_is_repeated_and_succeeds(gl):
    runner = gl.add_runner()
    gl.fail_next("POST", "/api/v4/runners/verify")
    answer = quick(gl.url).verify_runner(runner.token, SYSTEM_ID)
    assert answer["id"] == runner.id
    assert [r.path for r in gl.requests].count("/api/v4/runners/verify") == 2


def test_a_500_that_lasts_is_reported_with_the_attempts(gl):
    runner = gl.add_runner()
    gl.fail_next("POST", "/api/v4/runners/verify", times=5)
    with pytest.raises(GitLabAPIError) as caught:
        quick(gl.url).verify_runner(runner.token, SYSTEM_ID)
    assert "(HTTP 500)" in str(caught.value) and "(after 3 attempts)" in str(caught.value)
    assert [r.path for r in gl.requests].count("/api/v4/runners/verify") == 3


def test_a_refusal_is_never_repeated(gl):
    with pytest.raises(GitLabAPIError):
        quick(gl.url).verify_runner("glrt-MARKERunknown", SYSTEM_ID)
    assert len(gl.requests) == 1


def test_delete_whose_answer_was_lost_is_not_an_error(gl):
    runner = gl.add_runner(registered=True)
    gl.fail_next("DELETE", "/api/v4/runners")          # the stand-in's 500 changes nothing: deleted on the repeat
    quick(gl.url).delete_runner(runner.token)
    assert gl.runners == {}


def test_create_that_got_a_500_without_creating_is_created_once(gl):
    gl.fail_next("POST", "/api/v4/user/runners")
    created = quick(gl.url).create_runner(runner_type="project_type", project_id=1, description="b")
    assert len(gl.created) == 2                         # the second only after GitLab said it had none
    assert [r.path for r in gl.requests].index("/api/v4/runners") < [
        i for i, r in enumerate(gl.requests) if r.path == "/api/v4/user/runners"][1]
    assert list(gl.runners) == [created.id]


def test_create_that_timed_out_after_creating_takes_that_runner_over(gl):
    gl.hang_after_create(3)
    created = quick(gl.url, timeout=0.5).create_runner(runner_type="group_type", group_id=7, description="b")
    assert len(gl.created) == 1                         # never created twice
    assert list(gl.runners) == [created.id]
    assert gl.runner_by_token(created.token) is not None    # the token berth got works (a new one, reset)
    assert any(r.path.endswith("/reset_authentication_token") for r in gl.requests)


def test_create_that_timed_out_for_an_instance_runner_looks_at_all_runners(gl):
    gl.hang_after_create(3)
    created = quick(gl.url, timeout=0.5).create_runner(runner_type="instance_type")
    assert len(gl.created) == 1 and list(gl.runners) == [created.id]
    assert "/api/v4/runners/all" in [r.path for r in gl.requests]


def test_create_is_not_repeated_when_gitlab_cannot_say_whether_it_made_it():
    with GitLabStandIn(access_token=PAT, scopes=("create_runner",)) as standin:   # may create, may not list
        standin.hang_after_create(3)
        with pytest.raises(GitLabAPIError) as caught:
            quick(standin.url, timeout=0.5).create_runner(runner_type="project_type", project_id=1)
        assert len(standin.created) == 1
        assert len(standin.runners) == 1
    message = str(caught.value)
    assert "does not create it again" in message and "berth-create:" in message and "scope api" in message
    assert_no_secret(caught.value)
