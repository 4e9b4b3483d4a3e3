"""IS-12: git on the host runs nothing planted from inside the sandbox.

Each test plants one route from inside a real sandbox on a bind workspace, then runs the
user's ``git status``/``git commit``/``git log`` on the host (as the workspace owner) while
the session is open and again after it closed, and checks that no planted command ran.
``test_is12_attacks_work_on_an_unguarded_repository`` proves the probes would notice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import MakeManager
from tests.sandbox.conftest import HostUser, out, sh

from coderx_mcp.gitguard import find_new_git_entries, guard_workspace, remove_placeholders
from coderx_mcp.sessions import Session, SessionManager

RO = "Read-only file system"
BUSY = "Device or resource busy"  # renaming or removing a mount point


def fsmonitor_config(marker: Path) -> str:
    """Shell that writes ``$CFG``: a config whose ``core.fsmonitor`` touches ``marker``."""
    return f"printf '[core]\\n\\tfsmonitor = \"touch {marker}; false\"\\n' > \"$CFG\""


def hook(marker: Path, path: str) -> str:
    """Shell that writes an executable hook at ``path`` that touches ``marker``."""
    return f"printf '#!/bin/sh\\ntouch {marker}\\n' > {path} && chmod +x {path}"


def commondir_attack(marker: Path, commondir: str, points_to: str) -> str:
    """The reported attack: a copied git dir with a bad config and hook, and ``commondir``
    redirected to it."""
    return (f"mkdir -p evilgit/hooks && cp -r .git/objects .git/refs .git/HEAD evilgit/ && "
            f"CFG=evilgit/config && {fsmonitor_config(marker)} && "
            f"{hook(marker, 'evilgit/hooks/pre-commit')} && echo {points_to} > {commondir}")


@pytest.fixture
async def git_manager(make_manager: MakeManager, host: HostUser) -> SessionManager:
    """A Docker session manager whose allowed workspace root is the user's base directory."""
    return await make_manager("docker", workspace_roots=[host.base])


async def planted_fails(session: Session, script: str) -> None:
    """Run an attack in the sandbox; it must stop at a read-only file system or mount point."""
    r = await sh(session, script)
    assert r["exit_code"] != 0, f"the attack succeeded in the sandbox: {script}"
    assert RO in r["stderr"]["text"] or BUSY in r["stderr"]["text"], r["stderr"]["text"]


async def host_safe(manager: SessionManager, session: Session, host: HostUser,
                    *dirs: Path) -> list[str]:
    """Host git in each of ``dirs`` runs nothing, with the session open and after its close
    (whose report is returned)."""
    for d in dirs:
        host.git_runs_nothing(d)
    done = await manager.close(session.id, "tester")
    for d in dirs:
        host.git_runs_nothing(d)
    return done


async def test_is12_attacks_work_on_an_unguarded_repository(host: HostUser) -> None:
    """The control: the same plantings done without a sandbox do run on the host."""
    m = host.marker
    attacks = [
        commondir_attack(m, ".git/commondir", "../evilgit"),
        f"rm -rf .git/hooks && mkdir .git/hooks && {hook(m, '.git/hooks/pre-commit')}",
        f"git init -q sub && CFG=sub/.git/config && {fsmonitor_config(m)}",
    ]
    for i, attack in enumerate(attacks):
        ws = host.repo(f"control{i}")
        host.sh(ws, attack)
        host.run(ws if i < 2 else ws / "sub", ["git", "commit", "-q", "--allow-empty", "-m", "x"])
        host.run(ws if i < 2 else ws / "sub", ["git", "status"])
        assert m.exists(), f"attack {i} did not run on an unguarded repository"
        m.unlink()


@pytest.mark.docker
async def test_is12_git_commondir_planted_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, commondir_attack(host.marker, ".git/commondir", "../evilgit"))
    await host_safe(git_manager, session, host, ws)
    # evilgit looks like a bare repository: quarantined at close, so git in it finds ws's.
    assert (ws / "evilgit/HEAD.coderx-quarantine-1").exists()
    host.git_runs_nothing(ws / "evilgit")


@pytest.mark.docker
async def test_is12_git_worktree_commondir_planted_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "git worktree add -q ../linked")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, commondir_attack(
        host.marker, ".git/worktrees/linked/commondir", "../../../evilgit"))
    await host_safe(git_manager, session, host, ws, host.base / "linked")


@pytest.mark.docker
async def test_is12_missing_hooks_dir_created_in_sandbox_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "rm -rf .git/hooks")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session,
                        f"mkdir -p .git/hooks && {hook(host.marker, '.git/hooks/pre-commit')}")
    await host_safe(git_manager, session, host, ws)
    assert not (ws / ".git/hooks").exists()


@pytest.mark.docker
async def test_is12_hooks_symlink_into_workspace_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "mkdir githooks && rm -rf .git/hooks && ln -s ../githooks .git/hooks")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, hook(host.marker, "githooks/pre-commit"))
    await planted_fails(session, f"rm .git/hooks && mkdir .git/hooks && "
                                 f"{hook(host.marker, '.git/hooks/pre-commit')}")
    await host_safe(git_manager, session, host, ws)


@pytest.mark.docker
async def test_is12_hooks_path_inside_workspace_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    """husky's layout: ``core.hooksPath = .husky/_``, not yet created at session start."""
    ws = host.repo("ws")
    host.sh(ws, "git config core.hooksPath .husky/_")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, f"mkdir -p .husky/_ && {hook(host.marker, '.husky/_/pre-commit')}")
    await planted_fails(session, "rmdir .husky/_ || mv .husky .husky-old")
    await host_safe(git_manager, session, host, ws)
    assert not (ws / ".husky").exists(), "the server's placeholder outlived the session"


@pytest.mark.docker
async def test_is12_git_init_in_sandbox_without_repo_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    """No ``.git`` at the root (here: a package inside a larger repository): the sandbox can
    make neither a repository nor a bare one there that host git would find first."""
    parent = host.repo("mono")
    ws = host.mkdir("mono/pkg")
    host.sh(ws, "echo code > main.py")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, "git init -q .")
    bare = (f"mkdir -p objects refs/heads && CFG=config && {fsmonitor_config(host.marker)} && "
            "echo 'ref: refs/heads/main' > HEAD")
    r = await sh(session, bare)
    assert r["exit_code"] != 0 and "Is a directory" in r["stderr"]["text"]
    for victim in (".git", "HEAD"):
        await planted_fails(session, f"rmdir {victim} || mv {victim} moved")
    await host_safe(git_manager, session, host, ws, parent)
    assert host.run(ws, ["git", "rev-parse", "--show-toplevel"]).stdout.strip() == str(parent)
    assert not (ws / ".git").exists() and not (ws / "HEAD").exists()


@pytest.mark.docker
async def test_is12_nested_repository_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.mkdir("ws/vendor")
    lib = host.repo("ws/vendor/lib")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, f"CFG=vendor/lib/.git/config && {fsmonitor_config(host.marker)}")
    await planted_fails(session, hook(host.marker, "vendor/lib/.git/hooks/pre-commit"))
    for i, victim in enumerate(("vendor/lib/.git", "vendor/lib", "vendor")):
        await planted_fails(session, f"mv {victim} moved{i}")
    assert (ws / "vendor/lib/.git/HEAD").exists()
    await host_safe(git_manager, session, host, ws, lib)


@pytest.mark.docker
async def test_is12_submodule_git_dir_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    """A checked-out submodule (``sub/.git`` file, git dir in ``.git/modules``) and one not
    checked out (an empty directory: host ``git status`` would recurse into a new repo)."""
    upstream = host.repo("upstream")
    ws = host.repo("ws")
    host.sh(ws, f"git -c protocol.file.allow=always submodule -q add {upstream} sub && "
                f"git -c protocol.file.allow=always submodule -q add {upstream} later && "
                "git commit -qm subs && git submodule -q deinit later")
    session = await git_manager.open("tester", workspace=str(ws))
    m = host.marker
    await planted_fails(session, f"CFG=.git/modules/sub/config && {fsmonitor_config(m)}")
    await planted_fails(session, hook(m, ".git/modules/sub/hooks/pre-commit"))
    await planted_fails(session, "echo 'gitdir: ../evil' > sub/.git")
    await planted_fails(session,
                        f"git init -q later ; CFG=later/.git/config && {fsmonitor_config(m)}")
    await host_safe(git_manager, session, host, ws, ws / "sub")
    assert sorted(p.name for p in (ws / "later").iterdir()) == []


@pytest.mark.docker
async def test_is12_config_worktree_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "git config extensions.worktreeConfig true && git config --worktree x.y z")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, f"CFG=.git/config.worktree && {fsmonitor_config(host.marker)}")
    await host_safe(git_manager, session, host, ws)


@pytest.mark.docker
async def test_is12_include_paths_inside_workspace_run_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    """``include.path`` to an existing file and ``includeIf`` to a missing one."""
    ws = host.repo("ws")
    host.sh(ws, "echo '[user]' > shared.gitconfig && git config include.path ../shared.gitconfig "
                "&& git config includeIf.onbranch:main.path ../later.gitconfig")
    session = await git_manager.open("tester", workspace=str(ws))
    for target in ("shared.gitconfig", "later.gitconfig"):
        await planted_fails(session, f"CFG={target} && {fsmonitor_config(host.marker)}")
    await host_safe(git_manager, session, host, ws)
    assert not (ws / "later.gitconfig").exists()
    assert (ws / "shared.gitconfig").read_text() == "[user]\n"


@pytest.mark.docker
async def test_is12_fsmonitor_script_inside_workspace_runs_nothing_on_host(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "printf '#!/bin/sh\\nexit 1\\n' > fsmon.sh && chmod +x fsmon.sh && "
                "git config core.fsmonitor ./fsmon.sh")
    session = await git_manager.open("tester", workspace=str(ws))
    await planted_fails(session, hook(host.marker, "fsmon.sh"))
    await host_safe(git_manager, session, host, ws)


@pytest.mark.docker
async def test_is12_new_git_in_subdirectory_quarantined_at_close(
        git_manager: SessionManager, host: HostUser) -> None:
    """A repository the sandbox makes in a subdirectory cannot be refused by mounts; the close
    renames it so host git no longer treats it as one."""
    ws = host.repo("ws")
    host.sh(ws, "mkdir src && echo x > src/app.py")
    session = await git_manager.open("tester", workspace=str(ws))
    m = host.marker
    r = await sh(session, f"git init -q src && CFG=src/.git/config && {fsmonitor_config(m)} && "
                          f"{hook(m, 'src/.git/hooks/pre-commit')} && "
                          "mkdir -p bare/objects bare/refs && echo 'ref: refs/heads/x' > bare/HEAD")
    assert r["exit_code"] == 0, r["stderr"]["text"]
    assert find_new_git_entries(ws, [".git"]) == ["bare", "src/.git"]
    # While the session is open only the root is safe (README: not in subdirectories).
    done = await host_safe(git_manager, session, host, ws)
    assert any("disabled: src/.git -> src/.git.coderx-quarantine-1" in d for d in done), done
    for d in (ws / "src", ws / "bare"):
        host.git_runs_nothing(d)
    assert (ws / "src/.git.coderx-quarantine-1/config").exists()
    assert (ws / "bare/HEAD.coderx-quarantine-1").exists()
    assert find_new_git_entries(ws, [".git"]) == []


@pytest.mark.docker
async def test_git_read_commands_work_in_sandbox_on_bind_workspace(
        git_manager: SessionManager, host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "echo more >> README")
    session = await git_manager.open("tester", workspace=str(ws))
    r = await sh(session, "git status --short && git diff --stat && git log --oneline "
                          "&& git show --stat HEAD >/dev/null && git blame README >/dev/null")
    assert r["exit_code"] == 0, r["stderr"]["text"]
    assert " M README" in out(r) and "1 file changed" in out(r) and "initial" in out(r)
    r = await sh(session, "git commit -qam change")
    assert r["exit_code"] != 0 and RO in r["stderr"]["text"]


@pytest.mark.docker
async def test_is12_guard_reports_programs_it_cannot_protect(
        git_manager: SessionManager, host: HostUser) -> None:
    """Filters, drivers and the like that run workspace files are noted in session_info."""
    ws = host.repo("ws")
    host.sh(ws, "git config filter.lint.clean 'node ./tools/clean.js' && "
                "git config diff.pdf.textconv tools/pdf2txt && git config core.pager less")
    session = await git_manager.open("tester", workspace=str(ws))
    joined = "\n".join(session.info().notes)
    guard = session.workspace.git_guard
    assert guard is not None
    assert "filter.lint.clean runs tools/clean.js" in joined
    assert "diff.pdf.textconv runs tools/pdf2txt" in joined
    assert "core.pager" not in joined
    assert guard.git_entries == [".git"]
    assert [(m.source, m.target) for m in guard.mounts] == [(ws / ".git", "/workspace/.git")]


async def test_is12_guard_walk_cap_is_reported(host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "mkdir -p a b c && git init -q c/lib")
    guard = await guard_workspace(ws, max_entries=3)
    assert not guard.complete
    assert any("more than 3 entries" in w for w in guard.warnings)
    full = await guard_workspace(ws)
    assert full.complete and full.git_entries == [".git", "c/lib/.git"]


@pytest.mark.docker
async def test_is12_sandboxes_sharing_a_workspace_keep_its_placeholders(
        make_manager: MakeManager, host: HostUser) -> None:
    """Pooled and open sandboxes on one workspace: the first to close must not remove (and
    so unmount) placeholders another still relies on; the last one cleans up."""
    ws = host.mkdir("plain")
    manager = await make_manager("docker", pool_size=1, workspace=ws,
                                 workspace_roots=[host.base])
    assert await manager.pool.wait_full(60)
    a = await manager.open("tester")
    guard = a.workspace.git_guard
    assert guard is not None and guard.placeholders == [ws / ".git", ws / "HEAD"]
    assert await manager.pool.wait_full(60)
    await manager.close(a.id, "tester")
    b = await manager.open("tester")
    await planted_fails(b, "git init -q .")
    await planted_fails(b, "rmdir HEAD || mv HEAD moved")
    assert (await sh(b, "git init -q sub"))["exit_code"] == 0
    await manager.shutdown()
    assert sorted(os.listdir(ws)) == ["sub"]
    assert sorted(os.listdir(ws / "sub")) == [".git.coderx-quarantine-1"]


async def test_is12_guard_follows_gitdir_files_links_and_pins_parents(host: HostUser) -> None:
    ws = host.repo("ws")
    host.sh(ws, "mkdir meta && git init -q --separate-git-dir=meta/lib.git vendor/lib && "
                "rm -rf .git/hooks && ln -s ../myhooks .git/hooks")
    guard = await guard_workspace(ws)
    mounts = {(m.target, m.read_only) for m in guard.mounts}
    assert {("/workspace/vendor/lib/.git", True),  # the gitdir file ...
            ("/workspace/meta/lib.git", True),  # ... what it names
            ("/workspace/myhooks", True),  # a dangling hooks link: a placeholder
            ("/workspace/vendor", False), ("/workspace/vendor/lib", False),  # not renamable
            ("/workspace/meta", False)} <= mounts
    assert remove_placeholders(guard) == [ws / "myhooks"]
