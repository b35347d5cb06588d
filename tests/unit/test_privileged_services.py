"""allowed_privileged_services lets the docker:dind service of a real job run privileged.

gitlab-runner (executors/docker/docker.go isInAllowedPrivilegedImages) matches each pattern with
github.com/bmatcuk/doublestar/v4 ``Match(pattern, name)`` against the service name exactly as the job
wrote it (spec.Image.Name, before any normalisation). berth.gitlab.doublestar follows doublestar v4's documented
pattern syntax (its README "Patterns"); the smoke uses the same matcher.
"""

from __future__ import annotations

import pytest

from berth.gitlab.doublestar import match as doublestar_match
from berth.gitlab.runner_config import DIND_PRIVILEGED_SERVICES, RunnerSpec, docker_settings


def test_the_matcher_follows_doublestar():
    assert doublestar_match("docker:*-dind", "docker:27-dind")
    assert not doublestar_match("docker:*-dind", "docker:dind")        # what broke berth's old list
    assert not doublestar_match("docker:*", "docker:5000/library/docker")   # '*' never crosses '/'
    assert doublestar_match("**", "registry.example.com/group/docker:dind")
    assert doublestar_match("a/**/b", "a/b") and doublestar_match("a/**/b", "a/x/y/b")
    assert doublestar_match("docker:2[0-9]", "docker:27") and not doublestar_match("docker:2[!0-9]", "docker:27")
    assert doublestar_match("docker:?", "docker:7") and not doublestar_match("docker:?", "docker:27")


# The service names jobs write for the official image's dind variant. Its tags (docker-library/docker
# generate-stackbrew-library.sh): "dind", "<v>-dind", "<v>-dind-alpine<a>", and also "latest" and the bare
# version tags "<v>" / "<v>-alpine<a>" (for v = 29.7.2, 29.7, 29); "dind-rootless" variants need privileges
# too; "docker" alone means docker:latest; a digest may be appended.
DIGEST = "@sha256:" + "ab" * 32
DIND_NAMES = [
    "docker:dind",
    "docker:27-dind",
    "docker:27.5-dind",
    "docker:27.5.1-dind",
    "docker:29.7.2-dind-alpine3.24",
    "docker:latest",
    "docker",
    "docker:27",
    "docker:29.7.2",
    "docker:29.7.2-alpine3.24",
    "docker:rc",
    "docker:dind-rootless",
    "docker:29-dind-rootless",
    f"docker:dind{DIGEST}",
    f"docker{DIGEST}",
]
# Other repositories, and names that only look like the official image (another registry, another
# namespace, a registry host called "docker" on port 5000).
NOT_DIND = [
    "evil/docker:dind",
    "registry.example.com/docker:dind",
    "docker.io/evil/docker:dind",
    "ghcr.io/library/docker:dind",
    "docker:5000/library/docker:dind",
    "docker-evil:dind",
    "mydocker:dind",
    "postgres:16",
    "docker.io/library/docker-evil:dind",
]


def allowed(name: str) -> bool:
    return any(doublestar_match(pattern, name) for pattern in DIND_PRIVILEGED_SERVICES)


@pytest.mark.parametrize("name", DIND_NAMES + [f"docker.io/library/{n}" for n in DIND_NAMES])
def test_the_names_jobs_use_for_dind_are_allowed_privileged(name):
    assert allowed(name), f"{name} would run unprivileged: dockerd in it cannot start"


@pytest.mark.parametrize("name", NOT_DIND)
def test_other_images_stay_unprivileged(name):
    assert not allowed(name)


def test_the_services_privileged_form_writes_these_patterns():
    spec = RunnerSpec(name="d", url="https://gitlab.example.com", mode="dind", privileged_form="services_privileged")
    settings = docker_settings(spec)
    assert settings["services_privileged"] is True and settings["privileged"] is False
    assert settings["allowed_privileged_services"] == DIND_PRIVILEGED_SERVICES
