from __future__ import annotations

import logging

import click

from dicomd.cli.common import load_config
from dicomd.daemon import Daemon


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="DICOMD_CONFIG",
              help="TOML configuration file.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Override data_dir.")
@click.option("--dicom-port", type=int, help="Override the first receiver's port.")
@click.option("--http-port", type=int, help="Override the HTTP API port.")
@click.option("--session-idle", type=float, help="Override session_idle_seconds.")
@click.pass_context
def serve(ctx: click.Context, config_path: str | None, data_dir: str | None, dicom_port: int | None,
          http_port: int | None, session_idle: float | None) -> None:
    """Run the daemon: DICOM receivers, drop folders, session watcher and HTTP API.

    Example:

        dicomd serve --config config.example.toml --dicom-port 4242
    """
    config = load_config(config_path, data_dir=data_dir, dicom_port=dicom_port, http_port=http_port,
                         session_idle_seconds=session_idle)
    if not ctx.obj.get("verbose"):
        logging.getLogger().setLevel(config.log_level)
    daemon = Daemon(config).start()
    for item in daemon.listening:
        click.echo(f"dicomd: DICOM receiver {item.ae_title} on {item.address}:{item.port}", err=True)
    for service in daemon.services:
        if getattr(service, "url", None):  # the HTTP API (its real port when configured as 0)
            click.echo(f"dicomd: HTTP API on {service.url}", err=True)
    click.echo(f"dicomd: data in {config.data_dir}; Ctrl-C to stop", err=True)
    daemon.run_forever()


@click.command("receiver-process", hidden=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--data-dir", type=click.Path(file_okay=False), required=True)
@click.option("--ports", required=True, help="Comma-separated ports, one per receiver.")
def receiver_process(config_path: str | None, data_dir: str, ports: str) -> None:
    """Internal: one extra receiver process started by `dicomd serve` (receiver_processes > 1)."""
    from dicomd.workers import run_receiver_process

    config = load_config(config_path, data_dir=data_dir)
    logging.getLogger().setLevel(config.log_level)
    run_receiver_process(config, [int(p) for p in ports.split(",")])
