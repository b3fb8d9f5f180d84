"""``vhdtool fix``: make an existing fixed VHD Azure-ready in place (size to a MiB, footer)."""

from __future__ import annotations

import click

from vhdtool.cli import emit_json, main
from vhdtool.errors import UsageError
from vhdtool.jobs.fix import FixPlan, apply_fix, plan_fix


def _describe(plan: FixPlan) -> None:
    if not plan.needed:
        click.echo(f"{plan.path}: nothing to fix (fixed VHD of {plan.old_footer.current_size:,} bytes, "
                   "a whole number of MiB, footer valid)")
        return
    click.echo(f"{plan.path}: needs fixing")
    for reason in plan.reasons:
        click.echo(f"  - {reason}")
    click.echo(f"  virtual size {plan.old_footer.current_size:,} -> {plan.new_virtual_size:,} bytes; "
               f"file size {plan.file_size:,} -> {plan.new_file_size:,} bytes")
    for write in plan.writes:
        click.echo(f"  write {write.length} bytes at offset {write.offset:,}: {write.what}")
    for change in plan.changes:
        click.echo(f"  footer {change.name}: {change.old} -> {change.new}")
    click.echo(f"  {plan.bytes_to_write} bytes written in total; the disk's data is not touched")


@main.command("fix")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--yes", is_flag=True, help="Change IMAGE in place as described.")
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
@click.option("--sync", is_flag=True,
              help="Flush each write to the disk before the next (the file then ends in a valid footer "
                   "even after a crash); without it the kernel writes them out later.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (schema in docs/convert.md).")
def fix_command(image: str, yes: bool, dry_run: bool, sync: bool, as_json: bool) -> None:
    """Fix a fixed VHD in place: grow it to a whole MiB and rewrite its footer.

    For a VHD made without force_size (qemu-img), or with a wrong footer. It changes IMAGE, so
    it needs --yes; --dry-run only reports.
    """
    if yes and dry_run:
        raise UsageError("--yes and --dry-run exclude each other")
    plan = plan_fix(image)
    applied = False
    if plan.needed and yes:
        apply_fix(plan, sync=sync)
        applied = True
    if as_json:
        emit_json({**plan.to_json(), "applied": applied})
    else:
        _describe(plan)
        if applied:
            click.echo(f"fixed: {plan.path} is now {plan.new_file_size:,} bytes")
    if plan.needed and not yes and not dry_run:
        raise UsageError("nothing was changed; re-run with --yes to apply (or --dry-run to only report)")
