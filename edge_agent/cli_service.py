"""``edge-agent install-service`` and ``edge-agent check-config``: the CLI over
:mod:`edge_agent.systemd` and the config loader.

:func:`check_config` validates a config like ``edge-agent run`` would (the file, the
profile, the sections, the bundles) without starting anything.

Raises :class:`~edge_agent.errors.ConfigError` / ProfileError / BundleError naming the file
and key; the commands turn them into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from edge_agent.errors import ConfigError, EdgeError
from edge_agent.systemd import CONFIG_PATH, USER, ServiceOptions, install_service, render_unit


def check_config(path: Path | None, *, read_models: bool = True) -> list[str]:
    """Validate ``path`` like ``edge-agent run`` would, without starting; lines for the user.

    Raises ConfigError / ProfileError / BundleError naming the file and key.
    """
    from edge_agent.config import load_config
    from edge_agent.profiles import detect_profile, load_profile
    from edge_agent.store import ModelStore

    cfg = load_config(path)
    a = cfg.agent
    profile = load_profile(detect_profile() if a.profile == "auto" else a.profile)
    lines = [f"device {a.device_id}, profile {profile.name}, store {a.store_dir}"]
    if cfg.mqtt is not None:  # [mqtt], [telemetry] and [update] were validated by load_config
        lines.append(f"mqtt {cfg.mqtt.urls}")
    if cfg.update is not None and cfg.update.enabled:
        from edge_agent.update.service import check_root

        check_root(cfg.update)
        lines.append("update enabled")
    store = ModelStore(a.store_dir, max_bundle_bytes=a.max_bundle_bytes,
                       device_key=a.device_key_path)
    for spec in cfg.models:
        if read_models:
            b = store.read(spec.bundle)  # a sealed bundle is opened with [agent] device_key
            lines.append(f"model {b.name} v{b.version} from {spec.bundle}")
    if cfg.http.enabled:
        lines.append(f"http {cfg.http.host}:{cfg.http.port}"
                     + (" (token)" if cfg.http.token or cfg.http.token_file else ""))
    return lines


def _cmd_check_config(a: argparse.Namespace) -> int:
    try:
        lines = check_config(a.config, read_models=not a.no_models)
    except EdgeError as e:
        print(f"edge-agent: check-config: {e}", file=sys.stderr)
        return 2
    print(f"{a.config or '<defaults>'}: OK")
    for ln in lines:
        print(f"  {ln}")
    return 0


def _cmd_install_service(a: argparse.Namespace) -> int:
    try:
        opts = ServiceOptions(exec_path=Path(a.exec_path).absolute(), user=a.user,
                              config_path=Path(a.config).absolute(), watchdog_s=a.watchdog_s,
                              supplementary_groups=tuple(a.group or ()))
    except ConfigError as e:
        print(f"edge-agent: install-service: {e}", file=sys.stderr)
        return 2
    if a.print_unit:
        sys.stdout.write(render_unit(opts))
        return 0
    rep = install_service(opts, root=Path(a.root), enable=a.enable, start=a.start,
                          dry_run=a.dry_run)
    verb = "would write" if a.dry_run else "wrote"
    for p in rep.written:
        print(f"{verb} {p}")
    for p in rep.kept:
        print(f"kept {p} (exists)")
    for c in rep.commands:
        print(f"{'would run' if a.dry_run else 'ran'}: {' '.join(c)}")
    return 0


def add_service_commands(subparsers: Any) -> None:
    """Register ``install-service`` and ``check-config`` on the agent CLI's subparsers."""
    s = subparsers.add_parser("install-service", help="install the systemd unit, user and dirs")
    s.add_argument("--root", default="/", help="install under this root prefix (image builds)")
    s.add_argument("--exec", dest="exec_path", default=str(ServiceOptions().exec_path),
                   help="the edge-agent executable (default: this venv's)")
    s.add_argument("--user", default=USER)
    s.add_argument("--config", default=str(CONFIG_PATH))
    s.add_argument("--watchdog-s", type=int, default=60, help="WatchdogSec (0: off)")
    s.add_argument("--group", action="append", help="supplementary group (video, plugdev)")
    s.add_argument("--enable", action="store_true", help="systemctl enable")
    s.add_argument("--start", action="store_true", help="systemctl enable --now")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--print-unit", action="store_true", help="print the unit and exit")
    s.set_defaults(func=_cmd_install_service)
    c = subparsers.add_parser("check-config", help="validate agent.toml without starting")
    c.add_argument("--config", type=Path, default=os.environ.get("EDGE_AGENT_CONFIG"))
    c.add_argument("--no-models", action="store_true", help="do not open the [[models]] bundles")
    c.set_defaults(func=_cmd_check_config)
