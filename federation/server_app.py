"""The federation's Flower ServerApp: reads server.toml and drives the run (federation.server_run).

`fedseg server` submits it with two run-config values: the server.toml path and whether to resume.
The ServerApp runs next to the SuperLink, so that path is on the server's own disk.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.config import load_server_config
from federation.flower_internals import notice_a_zombie_parent, shorten_object_pulls
from federation.prompt_grid import PromptGrid
from federation.server_run import run_server
from segmentation.errors import ConfigError

# Keys of the run config ([tool.flwr.app.config] of the app project, set by `flwr run --run-config`).
SERVER_CONFIG_KEY = "server-config"
RESUME_KEY = "resume"

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every round of server.toml's federation, or the rest of them with resume."""
    path = context.run_config.get(SERVER_CONFIG_KEY)
    if not isinstance(path, str) or not path:
        raise ConfigError(f"the run config has no {SERVER_CONFIG_KEY!r}; start runs with `fedseg server`")
    resume = bool(context.run_config.get(RESUME_KEY, False))
    shorten_object_pulls()  # the sites' replies are pulled as soon as they are uploaded
    notice_a_zombie_parent()  # ends with its SuperLink even where nothing reaps a killed one
    run_server(PromptGrid(grid), load_server_config(path), resume=resume)
