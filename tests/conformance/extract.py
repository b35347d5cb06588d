"""Regenerate the upstream facts in ``tests/conformance/upstream/`` from checkouts of the real projects.

The conformance tests run without a network, so they read facts extracted once from upstream source and
committed here, each file recording the repository, the commit and the files it was read from. Run this
when moving berth to newer upstream versions, then read the diff of the JSON files:

    python -m tests.conformance.extract --gitlab-runner /path/to/gitlab-runner.git \
        --moby /path/to/moby.git --docker-bench /path/to/docker-bench-security.git

Both paths may be bare repositories (the files are read with ``git show REV:PATH``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

HERE = Path(__file__).parent / "upstream"

# gitlab-runner: the structs config.toml is decoded into (common/config.go, helpers/docker/credentials.go).
RUNNER_FILES = ("common/config.go", "helpers/docker/credentials.go")
RUNNER_STRUCTS = {"Config": "global", "RunnerConfig": "runners", "DockerConfig": "runners.docker",
                  "Service": "runners.docker.services"}
# moby: the daemon.json keys a SIGHUP reload applies (daemon/reload*.go, cmd/dockerd or daemon/command).
MOBY_TAGS = ("v20.10.24", "v23.0.0", "v24.0.0", "v25.0.0", "v26.0.0", "v27.5.1", "v28.5.2")
MOBY_RELOAD_FILES = ("daemon/reload.go", "daemon/reload_unix.go")
# Where dockerd's SIGHUP handler swaps the authorization plugins (the key is not in the reload event).
MOBY_RELOAD_CONFIG_FILES = ("cmd/dockerd/daemon.go", "daemon/command/daemon.go")
# Swarm-era keys gone since 23.0; berth never writes them.
MOBY_IGNORED = {"cluster-advertise", "cluster-store", "cluster-store-opts"}

# gitlab-runner's documented systemd drop-in for a graceful stop (the `gitlab-runner stop` pitfall section).
RUNNER_SYSTEMD_DOC = "docs/commands/_index.md"

# gitlab-runner's token facts: which tokens are "created runner" tokens (unregister removes only this host's
# runner manager for those) and every token prefix it masks in job logs.
RUNNER_TOKEN_FILES = {"network": "network/gitlab.go",
                      "masker": "common/buildlogger/internal/tokensanitizer/token_masker.go"}

STRUCT_START = re.compile(r"^type (\w+) struct \{")
FIELD = re.compile(r"^\s+(\w+)\s+([\w.*\[\]]+(?:\[[\w.]+\][\w.*\[\]]+)?)\s+`[^`]*toml:\"([^\",]*)")
EMBEDDED = re.compile(r"^\s+(?:\w+\.)?([A-Z]\w+)\s*(?://.*)?$")


def git_show(repo: Path, rev: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "show", f"{rev}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def go_structs(source: str) -> dict[str, dict[str, object]]:
    """Struct name -> {"fields": {toml key: go type}, "embedded": [struct names]} for a Go file."""
    structs: dict[str, dict[str, object]] = {}
    current: dict[str, object] | None = None
    for line in source.splitlines():
        start = STRUCT_START.match(line)
        if start:
            current = {"fields": {}, "embedded": []}
            structs[start.group(1)] = current
            continue
        if current is None:
            continue
        if line.startswith("}"):
            current = None
            continue
        field = FIELD.match(line)
        if field and field.group(3) not in ("", "-"):
            current["fields"][field.group(3)] = field.group(2)  # type: ignore[index]
        elif (embedded := EMBEDDED.match(line)) and "`" not in line:
            current["embedded"].append(embedded.group(1))  # type: ignore[union-attr]
    return structs


def flatten(structs: dict[str, dict[str, object]], name: str) -> dict[str, str]:
    """A struct's toml keys with those of its embedded structs (Go promotes them into the same table)."""
    struct = structs[name]
    keys: dict[str, str] = {}
    for embedded in struct["embedded"]:  # type: ignore[union-attr]
        if embedded in structs:
            keys.update(flatten(structs, embedded))
    keys.update(struct["fields"])  # type: ignore[arg-type]
    return keys


def extract_runner(repo: Path, rev: str) -> dict[str, object]:
    structs: dict[str, dict[str, object]] = {}
    for path in RUNNER_FILES:
        structs.update(go_structs(git_show(repo, rev, path)))
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    described = subprocess.run(["git", "-C", str(repo), "describe", "--tags", rev], capture_output=True,
                               text=True).stdout.strip()
    return {
        "source": {"repository": "gitlab-org/gitlab-runner", "commit": commit, "describe": described,
                   "files": list(RUNNER_FILES)},
        "tables": {table: flatten(structs, struct) for struct, table in RUNNER_STRUCTS.items()},
    }


def extract_runner_systemd(repo: Path, rev: str) -> dict[str, object]:
    """The [Service] settings of the kill.conf drop-in gitlab-runner's docs give for a graceful stop."""
    text = git_show(repo, rev, RUNNER_SYSTEMD_DOC)
    block = text[text.index("kill.conf"):]
    block = block[:block.index("```")]
    settings = dict(re.findall(r"^\s*(KillSignal|TimeoutStopSec)=(\S+)", block, re.MULTILINE))
    return {"source": {"repository": "gitlab-org/gitlab-runner", "file": RUNNER_SYSTEMD_DOC,
                       "commit": subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True,
                                                text=True, check=True).stdout.strip()},
            "kill_conf": settings}


def extract_runner_tokens(repo: Path, rev: str) -> dict[str, object]:
    network = git_show(repo, rev, RUNNER_TOKEN_FILES["network"])
    masker = git_show(repo, rev, RUNNER_TOKEN_FILES["masker"])
    created = re.search(r'createdRunnerTokenPrefix\s*=\s*"([^"]+)"', network)
    listed = re.search(r"allTokenPrefixes = \[\]string\{(.*?)\}", masker, re.S)
    defaults = re.search(r"tokenPrefixes := \[\]string\{(.*?)\}", masker, re.S)
    assert created and listed and defaults, "gitlab-runner moved its token facts: update extract.py"
    prefixes = re.findall(r'"([^"]+)"', defaults.group(1) + listed.group(1))
    return {"source": {"repository": "gitlab-org/gitlab-runner", "files": list(RUNNER_TOKEN_FILES.values())},
            "created_runner_token_prefix": created.group(1),
            # Cookie names are not tokens; berth has no session cookies to mask.
            "masked_token_prefixes": sorted(p for p in prefixes if p.endswith("-"))}


def extract_moby_reload(repo: Path) -> dict[str, object]:
    versions, gated = {}, {}
    for tag in MOBY_TAGS:
        text = "".join(git_show(repo, tag, path) for path in MOBY_RELOAD_FILES)
        keys = set(re.findall(r'attributes\["([a-z-]+)"\]', text)) | set(re.findall(r'IsValueSet\("([a-z-]+)"\)', text))
        for path in MOBY_RELOAD_CONFIG_FILES:
            try:
                if "authzMiddleware.SetPlugins(" in git_show(repo, tag, path):
                    keys.add("authorization-plugins")
            except subprocess.CalledProcessError:
                continue  # the file moved between versions
        versions[tag] = sorted(keys - MOBY_IGNORED)
        gated[tag] = sorted(set(re.findall(r'IsValueSet\("([a-z-]+)"\)', text)) - MOBY_IGNORED)
    return {"source": {"repository": "moby/moby", "files": list(MOBY_RELOAD_FILES),
                       "note": "keys a SIGHUP re-applies: the reload event's attributes, the keys reload code tests "
                               "with IsValueSet, and authorization-plugins (swapped by the SIGHUP handler)"},
            "reloaded_keys": versions,
            # Keys the reload code tests with IsValueSet: unless it first resets them to a default (the
            # max-* keys, the diagnostic port), removing one from the file keeps the old value in effect.
            "tested_with_is_value_set": gated}


# docker-bench-security (the CIS Docker Benchmark v1.6 reference implementation): the controls of the sections
# berth covers, one check function each, `local id=` and `local desc=` with (Automated)/(Scored) or (Manual).
BENCH_FILES = ("tests/1_host_configuration.sh", "tests/2_docker_daemon_configuration.sh",
               "tests/3_docker_daemon_configuration_files.sh", "tests/5_container_runtime.sh")
_BENCH_CHECK = re.compile(
    r'^check_[0-9_]+\(\) \{\n(?:(?!^\}).*\n)*?\s*local id="([0-9.]+)"\n\s*local desc="([^"]*)"', re.M)


def extract_docker_bench(repo: Path, rev: str = "HEAD") -> dict[str, object]:
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    controls = []
    for path in BENCH_FILES:
        for cis_id, desc in _BENCH_CHECK.findall(git_show(repo, commit, path)):
            if cis_id.count(".") == 0 or desc.endswith(("Configuration", "configuration", "files", "Runtime")):
                continue        # section headers
            kind = re.search(r"\((Automated|Scored|Manual)\)\s*$", desc)
            title = re.sub(r"^[0-9.]+ ", "", re.sub(r"\s*\((Automated|Scored|Manual)\)\s*$", "", desc))
            controls.append({"id": cis_id, "title": title, "file": path,
                             "automated": bool(kind) and kind.group(1) in ("Automated", "Scored")})
    return {"source": {"repository": "docker/docker-bench-security", "commit": commit, "files": list(BENCH_FILES),
                       "note": "automated: the description says (Automated) or (Scored); (Manual) controls only "
                               "inform (docker-bench's info, never warn)"},
            "controls": controls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gitlab-runner", type=Path)
    parser.add_argument("--gitlab-runner-rev", default="HEAD")
    parser.add_argument("--moby", type=Path)
    parser.add_argument("--docker-bench", type=Path)
    args = parser.parse_args()
    if args.gitlab_runner:
        facts = extract_runner(args.gitlab_runner, args.gitlab_runner_rev)
        (HERE / "gitlab_runner_config.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        facts = extract_runner_tokens(args.gitlab_runner, args.gitlab_runner_rev)
        (HERE / "gitlab_runner_tokens.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
        facts = extract_runner_systemd(args.gitlab_runner, args.gitlab_runner_rev)
        (HERE / "gitlab_runner_systemd.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    if args.moby:
        facts = extract_moby_reload(args.moby)
        (HERE / "moby_reload.json").write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    if args.docker_bench:
        facts = extract_docker_bench(args.docker_bench)
        (HERE / "docker_bench.json").write_text(json.dumps(facts, indent=1) + "\n")


if __name__ == "__main__":
    main()
