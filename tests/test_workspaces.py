"""Workspaces the host chooses, never the model: roots, refusals, ownership, modes.

Every refusal checks that the directory's files and ownership are unchanged afterwards.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from tests.conftest import MakeSettings, chown_tree, host_git, make_repo
from tests.tools.conftest import err, ok

from coderx_mcp.config import Settings
from coderx_mcp.server import build_server

pytestmark = pytest.mark.docker


def _tree_state(root: Path) -> list[tuple[str, int, int, bytes]]:
    """Every path under ``root`` with its owner, mode and content (for files)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            out.append((str(p), st.st_uid, st.st_mode, data))
    st = root.stat()
    return [(str(root), st.st_uid, st.st_mode, b""), *out]


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with a project, and directories outside it (one root-owned)."""
    allowed = tmp_path / "allowed"
    proj = allowed / "proj"
    proj.mkdir(parents=True)
    (proj / "a.txt").write_text("a\n")
    chown_tree(allowed)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    chown_tree(outside)
    rootowned = allowed / "rootowned"
    rootowned.mkdir()
    (rootowned / "r.txt").write_text("root\n")
    os.chown(allowed, 1000, 1000)
    return {"allowed": allowed, "proj": proj, "outside": outside, "rootowned": rootowned}


@pytest.fixture
async def rooted(make_settings: MakeSettings, roots: dict[str, Path]
                 ) -> AsyncIterator[Client[Any]]:
    """A server whose only allowed root is ``roots['allowed']`` (default: ``proj``)."""
    s = make_settings(workspace=roots["proj"], workspace_roots=[roots["allowed"]])
    async with Client(build_server(s)) as c:
        yield c


async def _refused(c: Client[Any], target: Path, workspace: str, *words: str) -> str:
    before = _tree_state(target)
    text = await err(c, "session_open", workspace=workspace)
    for w in words:
        assert w in text, text
    assert _tree_state(target) == before
    return text


async def test_is11_workspace_outside_roots_absolute_refused(rooted: Client[Any],
                                                             roots: dict[str, Path]) -> None:
    text = await _refused(rooted, roots["outside"], str(roots["outside"]),
                          "outside the allowed roots", str(roots["allowed"]))
    assert "secret" not in text


async def test_is11_workspace_outside_roots_relative_dotdot_refused(
        rooted: Client[Any], roots: dict[str, Path]) -> None:
    await _refused(rooted, roots["outside"], "../../outside", "outside the allowed roots")


async def test_is11_workspace_symlink_in_root_to_outside_refused(
        rooted: Client[Any], roots: dict[str, Path]) -> None:
    link = roots["allowed"] / "escape"
    link.symlink_to(roots["outside"])
    await _refused(rooted, roots["outside"], str(link), "outside the allowed roots")


async def test_is11_workspace_system_dirs_refused(rooted: Client[Any]) -> None:
    for path in ("/etc", "/root/.ssh", "/", "/var/run", "/proc/1"):
        text = await err(rooted, "session_open", workspace=path)
        assert "system" in text or "outside" in text or "does not exist" in text, text


async def test_is11_workspace_root_owned_refused_not_chowned(rooted: Client[Any],
                                                             roots: dict[str, Path]) -> None:
    text = await _refused(rooted, roots["rootowned"], str(roots["rootowned"]),
                          "owned by root", "--sandbox-uid")
    assert "chown" in text
    assert roots["rootowned"].stat().st_uid == 0


async def test_is11_workspace_server_data_dir_refused(make_settings: MakeSettings,
                                                      tmp_path: Path) -> None:
    """The server's own directory (other principals' scratch) is never a workspace."""
    chown_tree(tmp_path)
    s = make_settings(workspace_roots=[tmp_path])
    async with Client(build_server(s)) as c:
        scratch = await ok(c, "session_open", mode="scratch")
        ws = Path(scratch["info"]["workspace"])
        assert ws.is_dir()
        for target in (ws, s.data_dir, tmp_path):
            text = await err(c, "session_open", workspace=str(target))
            assert "server's own directory" in text, text
        assert ws.is_dir()


async def test_scratch_deleted_only_when_created_for_the_session(
        make_settings: MakeSettings, tmp_path: Path) -> None:
    """A directory named like a scratch one, bound by a session, survives its close."""
    root = tmp_path / "projects"
    lookalike = root / "scratch-0123456789ab"
    lookalike.mkdir(parents=True)
    (lookalike / "work.txt").write_text("precious\n")
    chown_tree(root)
    s = make_settings(workspace_roots=[root])
    async with Client(build_server(s)) as c:
        opened = await ok(c, "session_open", workspace=str(lookalike))
        await ok(c, "session_close", session=opened["session"])
        assert (lookalike / "work.txt").read_text() == "precious\n"
        scratch = await ok(c, "session_open", mode="scratch")
        sws = Path(scratch["info"]["workspace"])
        assert sws.stat().st_uid == 1000  # created with the sandbox's owner from the start
        await ok(c, "session_close", session=scratch["session"])
        assert not sws.exists()


async def test_no_roots_means_scratch_only(make_settings: MakeSettings, workspace: Path) -> None:
    async with Client(build_server(make_settings(workspace_roots=[]))) as c:
        text = await err(c, "session_open", workspace=str(workspace))
        assert "no workspace roots" in text
        info = await ok(c, "session_info")
        assert info["info"]["mode"] == "scratch"
        health = await ok(c, "health")
        assert health["workspace_rule"] == "scratch"


async def test_default_workspace_is_cwd(make_settings: MakeSettings, workspace: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (workspace / "README.md").write_text("hello from the project\n")
    chown_tree(workspace)
    monkeypatch.chdir(workspace)
    async with Client(build_server(make_settings(use_cwd=True, workspace_roots=[]))) as c:
        r = await ok(c, "read_file", path="README.md")
        assert "hello from the project" in str(r)
        info = await ok(c, "session_info")
        assert info["info"]["chosen_by"] == "cwd"
        assert info["info"]["workspace"] == str(workspace.resolve())


async def test_default_workspace_cwd_root_falls_back_to_scratch(
        make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    async with Client(build_server(make_settings(use_cwd=True, workspace_roots=[]))) as c:
        health = await ok(c, "health")
        assert health["workspace_rule"] == "scratch"
        assert "system or home directory" in health["workspace_note"]
        info = await ok(c, "session_info")
        assert info["info"]["mode"] == "scratch"


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_default_workspace_from_mcp_roots(make_settings: MakeSettings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "rootA", tmp_path / "rootB"
    for d in (a, b):
        d.mkdir()
        (d / "which.txt").write_text(d.name + "\n")
        chown_tree(d)
    monkeypatch.chdir("/")
    server = build_server(make_settings(use_cwd=True, workspace_roots=[]))
    host_roots = [a.as_uri(), b.as_uri()]
    # mode="legacy": roots/list is a server-to-client request of the handshake-era protocol
    # (deprecated in 2026-07-28, still what hosts such as Claude Code speak).
    async with Client(server, roots=lambda _ctx: host_roots, mode="legacy") as c:
        out = await ok(c, "run_command", command="cat which.txt")
        assert "rootA" in out["stdout"]
        info = await ok(c, "session_info")
        assert info["info"]["chosen_by"] == "mcp-roots"
        # Both roots are allowed; nothing else is.
        other = await ok(c, "session_open", workspace=str(b))
        assert other["info"]["workspace"] == str(b.resolve())
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        chown_tree(elsewhere)
        assert "outside the allowed roots" in await err(c, "session_open",
                                                        workspace=str(elsewhere))
        # The host changes its roots: the next default session follows.
        host_roots[:] = [b.as_uri()]
        await c.send_roots_list_changed()
        await ok(c, "session_close")
        out = await ok(c, "run_command", command="cat which.txt")
        assert "rootB" in out["stdout"]


async def test_worktree_sessions_parallel_edits_and_commits(make_settings: MakeSettings,
                                                            tmp_path: Path) -> None:
    """The acceptance scenario: two worktree sessions on one repository."""
    repo = make_repo(tmp_path / "repo", {"app.py": "VALUE = 0\n"})
    head = host_git(repo, "rev-parse", "HEAD").strip()
    async with Client(build_server(make_settings(workspace=repo))) as c:
        sids = []
        for n in (1, 2):
            opened = await ok(c, "session_open", mode="worktree")
            sid = opened["session"]
            sids.append(sid)
            assert opened["info"]["branch"] == f"coderx/{sid}"
            await ok(c, "read_file", session=sid, path="app.py")
            await ok(c, "edit_file", session=sid, path="app.py", old_string="VALUE = 0",
                     new_string=f"VALUE = {n}")
        for n, sid in enumerate(sids, 1):
            st = await ok(c, "run_command", session=sid,
                          command="git status --short && git diff")
            assert " M app.py" in st["stdout"] and f"+VALUE = {n}" in st["stdout"]
        # One commits inside its sandbox, the other through session_commit.
        inside = await ok(c, "run_command", session=sids[0],
                          command="git commit -qam 'one' && git log --format=%s -1")
        assert inside["exit_code"] == 0 and "one" in inside["stdout"]
        made = await ok(c, "session_commit", session=sids[1], message="two")
        assert made["commit"] and made["branch"] == f"coderx/{sids[1]}"
        diff = await ok(c, "session_diff", session=sids[1])
        assert [f["path"] for f in diff["files"]] == ["app.py"]
        assert "+VALUE = 2" in diff["diff"]
        for sid in sids:
            done = await ok(c, "session_close", session=sid)
            assert any("kept" in line for line in done["workspace"])
    for n, sid in enumerate(sids, 1):
        assert host_git(repo, "show", f"coderx/{sid}:app.py") == f"VALUE = {n}\n"
    assert host_git(repo, "rev-parse", "HEAD").strip() == head
    assert (repo / "app.py").read_text() == "VALUE = 0\n"
    assert host_git(repo, "status", "--porcelain") == ""
    assert len(host_git(repo, "worktree", "list").splitlines()) == 1  # the main tree only


async def test_worktree_git_metadata_read_only_in_sandbox(make_settings: MakeSettings,
                                                          tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f.txt": "x\n"})
    common = repo / ".git"
    async with Client(build_server(make_settings(workspace=repo))) as c:
        sid = (await ok(c, "session_open", mode="worktree"))["session"]
        attempts = {
            "config": f"echo '[core] fsmonitor = touch /tmp/x' >> {common}/config",
            "hook": f"echo 'touch /tmp/x' > {common}/hooks/pre-commit",
            "commondir": "echo ../evil > $(git rev-parse --git-dir)/commondir",
            "gitdir": "echo /tmp > $(git rev-parse --git-dir)/gitdir",
            "config.worktree": "echo x > $(git rev-parse --git-dir)/config.worktree",
            "main branch": f"echo 0000 > {common}/refs/heads/main",
            "gitfile": "echo 'gitdir: /tmp/evil' > .git",
        }
        for what, cmd in attempts.items():
            r = await ok(c, "run_command", session=sid, command=cmd)
            assert r["exit_code"] != 0, what
            assert "Read-only file system" in r["stderr"], (what, r["stderr"])
        await ok(c, "session_close", session=sid, keep=False)
    assert "fsmonitor" not in (common / "config").read_text()
    assert not (common / "hooks" / "pre-commit").exists()
    assert "coderx/" not in host_git(repo, "branch", "--list")


async def test_worktree_close_keeps_uncommitted_work(make_settings: MakeSettings,
                                                     tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f.txt": "x\n"})
    async with Client(build_server(make_settings(workspace=repo))) as c:
        sid = (await ok(c, "session_open", mode="worktree"))["session"]
        wt = Path((await ok(c, "session_info", session=sid))["info"]["workspace"])
        await ok(c, "write_file", session=sid, path="new.txt", content="work\n")
        done = await ok(c, "session_close", session=sid)
        assert any("uncommitted changes committed" in d for d in done["workspace"])
    assert not wt.exists()
    assert host_git(repo, "show", f"coderx/{sid}:new.txt") == "work\n"


async def test_worktree_needs_a_repository(make_settings: MakeSettings, workspace: Path) -> None:
    chown_tree(workspace)
    async with Client(build_server(make_settings(workspace=workspace))) as c:
        text = await err(c, "session_open", mode="worktree")
        assert "needs a git repository" in text


async def test_commit_refused_outside_worktree_mode(make_settings: MakeSettings,
                                                    workspace: Path) -> None:
    async with Client(build_server(make_settings(workspace=workspace))) as c:
        assert "needs a worktree session" in await err(c, "session_commit", message="m")


async def test_copy_mode_private_and_honours_gitignore(make_settings: MakeSettings,
                                                       tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"keep.py": "k\n", ".gitignore": "build/\n"})
    (repo / "build").mkdir()
    (repo / "build" / "big.bin").write_text("ignored\n")
    (repo / "untracked.txt").write_text("u\n")
    chown_tree(repo)
    before = _tree_state(repo)
    async with Client(build_server(make_settings(workspace=repo))) as c:
        opened = await ok(c, "session_open", mode="copy")
        sid, copy = opened["session"], Path(opened["info"]["workspace"])
        ls = await ok(c, "run_command", session=sid, command="ls -A; git status --short")
        assert "keep.py" in ls["stdout"] and "untracked.txt" in ls["stdout"]
        assert "build" not in ls["stdout"].split()
        await ok(c, "run_command", session=sid, command="echo changed > keep.py; rm untracked.txt")
        diff = await ok(c, "session_diff", session=sid)
        assert sorted((f["path"], f["status"]) for f in diff["files"]) == [
            ("keep.py", "M"), ("untracked.txt", "D")]
        await ok(c, "session_close", session=sid)
    assert not copy.exists()
    assert _tree_state(repo) == before


async def test_session_diff_pages(make_settings: MakeSettings, workspace: Path) -> None:
    async with Client(build_server(make_settings(workspace=workspace, output_cap=1000))) as c:
        await ok(c, "run_command", command="seq 1 2000 > big.txt")
        first = await ok(c, "session_diff")
        assert first["next_offset"] is not None and first["total_lines"] > 2000
        rest, offset = [first["diff"]], first["next_offset"]
        while offset is not None:
            page = await ok(c, "session_diff", offset=offset)
            rest.append(page["diff"])
            offset = page["next_offset"]
        added = [ln for ln in "".join(rest).splitlines() if ln.startswith("+")
                 and not ln.startswith("+++")]
        assert added == [f"+{n}" for n in range(1, 2001)]


async def test_pool_creates_no_worktrees(make_settings: MakeSettings, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"f.txt": "x\n"})
    s: Settings = make_settings(workspace=repo, pool_size=2)
    async with Client(build_server(s)) as c:
        await ok(c, "health")
        await ok(c, "run_command", command="true")
        assert "coderx/" not in host_git(repo, "branch", "--list")
        assert not (s.data_dir / "worktrees").exists() or not any(
            (s.data_dir / "worktrees").iterdir())


async def test_workspaces_of_a_dead_server_are_removed_at_start(
        make_settings: MakeSettings, tmp_path: Path) -> None:
    """A server killed with SIGKILL leaves scratch directories and records; the next one
    removes them (and only those of servers that are gone)."""
    import json
    import socket

    s = make_settings(workspace_roots=[])
    dead = {"coderx.managed": "1", "coderx.instance": "dead", "coderx.instance-pid": "999999",
            "coderx.instance-start": "1", "coderx.instance-host": socket.gethostname()}
    records = s.data_dir / "records"
    records.mkdir(parents=True)
    left = s.data_dir / "scratch" / "s-dead"
    left.mkdir(parents=True)
    (left / "f").write_text("x")
    ws = {"session_id": "s-dead", "mode": "scratch", "host": str(left), "source": None,
          "rule": "scratch", "created": True, "uid": 1000, "gid": 1000}
    (records / "s-dead.json").write_text(json.dumps({"labels": dead, "workspace": ws}))
    alive = dict(dead, **{"coderx.instance": "alive", "coderx.instance-pid": str(os.getpid())})
    from coderx_mcp.sandbox.instance import process_start_time

    alive["coderx.instance-start"] = process_start_time(os.getpid()) or "?"
    kept = s.data_dir / "scratch" / "s-alive"
    kept.mkdir()
    (records / "s-alive.json").write_text(json.dumps(
        {"labels": alive, "workspace": dict(ws, session_id="s-alive", host=str(kept))}))
    async with Client(build_server(s)) as c:
        await ok(c, "health")
    assert not left.exists() and not (records / "s-dead.json").exists()
    assert kept.exists() and (records / "s-alive.json").exists()
