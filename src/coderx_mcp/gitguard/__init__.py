"""Keep git on the host from running anything the sandbox planted in a bind workspace.

The user's next ``git status`` or ``git commit`` on the host reads the repository's config,
``commondir``/``gitdir`` links, includes and hooks, and runs hooks, ``core.fsmonitor``
and filters. If the sandbox could write any of them, git would run the model's commands
on the host. So, before the container starts (host side, no Docker involved):

- every git directory found in the workspace (``.git`` dirs, ``.git`` files, bare
  repositories, and the git dirs those point at inside the workspace) is bind-mounted
  read-only onto itself (a mount point can neither be written nor renamed away). Git inside
  the sandbox can read the repository (status, diff, log) but not change it;
- where git would look but nothing exists yet, the server creates an empty placeholder and
  mounts it read-only: ``.git`` (and ``HEAD``) at the root, ``.git`` in uninitialised
  submodules, a missing ``core.hooksPath`` directory or include/fsmonitor file;
- config files, ``core.hooksPath``, ``core.fsmonitor`` programs and ``include.path``
  targets that resolve inside the workspace are mounted read-only too;
- the directories between the workspace root and each of those mounts are mounted onto
  themselves, writable: renaming ``vendor`` would otherwise carry ``vendor/lib/.git``'s
  mount away and free its path for a planted repository;
- programs named by other keys (filters, diff drivers, pager, editor, ...) that live inside
  the workspace cannot be frozen without breaking the project: they are reported.

What cannot be prevented by mounts (a new ``.git`` in a subdirectory) is found when the
workspace is released (:func:`find_new_git_entries`) and neutralised (:func:`quarantine`).
Placeholders are removed then too, by the last sandbox using the directory
(:func:`hand_over`): removing one on the host unmounts it in every container.
"""

from coderx_mcp.gitguard.guard import guard_workspace
from coderx_mcp.gitguard.state import (
    GitGuard,
    find_new_git_entries,
    hand_over,
    quarantine,
    release_guard,
    remove_placeholders,
    walk_git_entries,
)

__all__ = ["GitGuard", "find_new_git_entries", "guard_workspace", "hand_over", "quarantine",
           "release_guard", "remove_placeholders", "walk_git_entries"]
