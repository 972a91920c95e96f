"""`posture agent collect` and `posture keys`: the host agent's commands (registered by entry point)."""

from __future__ import annotations

from pathlib import Path

import click

from scanner.errors import PostureError


def _key_text(value: str) -> str:
    """A public key given as the line itself or as the path of a .pub file holding it."""
    if value.startswith("posture-"):
        return value
    path = Path(value)
    if not path.is_file():
        raise PostureError(f"{value[:100]!r} is neither a public key line nor a file", "give `posture-... BASE64`")
    if path.stat().st_size > 4096:
        raise PostureError(f"{path} is too large to be a public key file", "give the .pub file")
    return path.read_text(encoding="utf-8", errors="replace")


@click.group("agent")
def agent_group() -> None:
    """The host agent: inventory a machine from the inside, as a signed bundle for the central site."""


@agent_group.command("collect")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the bundle (written whole or not at all).")  # fmt: skip
@click.option("--encrypt-to", metavar="KEY", help="Also encrypt to the central site's key: its `posture-x25519 ...` "
              "line (from `posture keys list` there) or a .pub file holding it.")  # fmt: skip
@click.option("--from-reg", "reg_files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inventory a Windows machine from `reg export` files of its Uninstall and CurrentVersion keys "
              "instead of this machine (repeatable).")  # fmt: skip
@click.option("--hostname", help="The Windows machine's name, with --from-reg.")
@click.option("--json", "as_json", is_flag=True, help="Also print the payload as JSON on stdout (to review it).")
@click.pass_context
def collect_command(ctx: click.Context, out: Path, encrypt_to: str | None, reg_files: tuple[Path, ...],
                    hostname: str | None, as_json: bool) -> None:  # fmt: skip
    """Gather this machine's OS, installed packages (dpkg, rpm, apk, pip), listening ports and identity
    (machine-id, hostnames, MACs) and write them as a bundle signed with this machine's key.

    Nothing is sent anywhere: carry the file to the central site (`posture import bundle FILE`). Make the
    signing key once with `posture keys generate`, and have the central site trust its public line.

    \b
    Examples:
      posture agent collect --out host.bundle
      posture agent collect --out host.bundle --encrypt-to central.pub
    """
    import json

    from scanner.bundles import make_bundle, write_bundle
    from scanner.command import open_run_log
    from scanner.hostagent import RegExport, collect, collect_windows
    from scanner.runlog import say

    open_run_log(ctx)  # cron runs it: its lines go to the log file too

    recipient = _key_text(encrypt_to) if encrypt_to else None
    if reg_files:
        merged = RegExport(reg_files[0])
        warnings = merged.warnings
        for extra in reg_files[1:]:
            export = RegExport(extra)
            merged.keys.update(export.keys)
            warnings += export.warnings
        payload = collect_windows(merged, hostname)
        payload["warnings"] += warnings  # values skipped in the exports: said here and kept in the bundle
    else:
        if hostname:
            raise PostureError("--hostname goes with --from-reg", "this machine's own names are read from it")
        payload = collect()
    data = make_bundle(payload, recipient)
    write_bundle(out, data)
    os_info = payload["os"]
    os_name = os_info.get("pretty_name") or os_info.get("id") or "unknown OS"
    for warning in payload["warnings"]:
        say(f"agent: {warning}")
    say(f"agent: {os_name}; {len(payload['packages'])} packages; {len(payload['listening'])} listening ports; "
        f"written {out} ({len(data) / 1024:.0f} KiB, signed{', encrypted' if recipient else ''})")  # fmt: skip
    if as_json:
        click.echo(json.dumps(payload, indent=2))


@click.group("keys")
def keys_group() -> None:
    """Keys for host-agent bundles: this machine's own, and the agents' keys the central site trusts."""


@keys_group.command("generate")
@click.option("--force", is_flag=True, help="Replace existing keys (bundles signed with the old key stop verifying "
              "wherever only the old key is trusted).")  # fmt: skip
def keys_generate(force: bool) -> None:
    """Make this machine's signing key (Ed25519: agents sign bundles) and encryption key (X25519: the
    central site opens bundles sealed to it). Private halves are sealed with the vault key; existing keys
    are kept unless --force.

    \b
    Examples:
      posture keys generate
      posture keys generate --force        (a new key: re-trust it at the centre)
    """
    from scanner.bundles import generate_keys, keys_dir

    for name, line in generate_keys(force).items():
        click.echo(f"{name}: {line}")
    click.echo(f"kept in {keys_dir()}; give the signing line to the central site (`posture keys trust`)")


@keys_group.command("trust")
@click.argument("public_key")
@click.option("--name", required=True, help="Who the key belongs to, e.g. the host or site: shown on each import.")
def keys_trust(public_key: str, name: str) -> None:
    """Trust an agent's signing key: PUBLIC_KEY is its `posture-ed25519 ...` line or a .pub file.

    \b
    Examples:
      posture keys trust site-a.pub --name "Annex site"
    """
    from scanner.bundles import trust

    kid = trust(_key_text(public_key), name)
    click.echo(f"trusted: {name} ({kid})")


@keys_group.command("untrust")
@click.argument("name_or_id")
def keys_untrust(name_or_id: str) -> None:
    """Stop trusting a key: bundles it signed are refused from now on.

    \b
    Examples:
      posture keys untrust site-a
    """
    from scanner.bundles import untrust

    click.echo(f"no longer trusted: {untrust(name_or_id)}")


@keys_group.command("list")
def keys_list() -> None:
    """This machine's public keys and the trusted agent keys.

    \b
    Examples:
      posture keys list
    """
    from scanner.bundles import SIGNING_PREFIX, key_id, own_public_keys, parse_public_line, trusted_keys
    from scanner.model import printable

    own = own_public_keys()
    if not own:
        click.echo("this machine: no keys (posture keys generate)")
    for name, line in own.items():
        prefix = line.split()[0]
        click.echo(f"this machine, {name} ({key_id(parse_public_line(line, prefix))}): {line}")
    trusted = trusted_keys()
    click.echo(f"trusted agent keys: {len(trusted)}")
    for kid, entry in sorted(trusted.items(), key=lambda kv: kv[1]["name"]):
        click.echo(f"  {printable(entry['name'], 64)} ({kid}), added {entry['added'][:10]}: "
                   f"{SIGNING_PREFIX} {entry['public']}")  # fmt: skip
