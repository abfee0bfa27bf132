"""`fedseg demo`: the one-command federation of a CT, an MR-T1 and an MR-T2 site on demo phantoms.

Makes the data, runs a real SuperLink and SuperNodes on 127.0.0.1 with TLS, prints each site's numbers
per round as `fedseg server` does, and writes report.md, report.json and charts into --out. With
--baselines it also trains local-only and centralized models and checks the demo's targets; with --he
the sites' updates are aggregated homomorphically encrypted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from app.commands.server import RoundTable


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a real federation of one site per modality on demo data and report it",
        description="Federated training (FedAvg with GIN) of a CT, an MR-T1 and an MR-T2 site on demo "
                    "phantoms through real Flower processes on 127.0.0.1 with TLS; writes report.md, "
                    "report.json and PNG charts into --out. About 5 minutes on 2 CPU cores.",
    )
    parser.add_argument("--rounds", type=int, help="federated rounds (default 80)")
    parser.add_argument("--local-epochs", type=int, help="epochs each site trains per round (default 1)")
    parser.add_argument("--personalise-epochs", type=int,
                        help="epochs each site fine-tunes the final global model on its own data, kept as "
                             "its personalised model (default 10; 0: none)")
    parser.add_argument("--sites", default="ct,mr-t1,mr-t2",
                        help="comma-separated site modalities, one site each (default ct,mr-t1,mr-t2)")
    parser.add_argument("--baselines", action="store_true",
                        help="also train local-only and centralized models for the same epochs and check the "
                             "demo's targets (takes about twice as long again)")
    parser.add_argument("--he", action="store_true",
                        help="homomorphically encrypted aggregation: the sites mask and encrypt their "
                             "updates (BFV), the server only adds them; keys made once into "
                             "OUT/federation/he")
    parser.add_argument("--dp", action="store_true",
                        help="differential privacy: every site trains with DP-SGD at site.toml [privacy]'s "
                             "defaults and the report gives each site's epsilon spent")
    parser.add_argument("--join-site", metavar="MODALITY",
                        help="start every site but this one (e.g. ct) and wait up to 10 minutes for it "
                             "to join from outside (the workbench's Federation page, or `fedseg site "
                             "--config` with the site.toml named in OUT/federation/join-site.json)")
    parser.add_argument("--out", type=Path, default=Path("runs/demo"),
                        help="output folder (default runs/demo)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.progress import EventProgressBar
    from federation.demo import DemoSettings, run_demo
    from federation.demo.report import report_markdown

    changes = {"sites": tuple(site.strip() for site in args.sites.split(",") if site.strip()), "he": args.he,
               "dp": args.dp}
    for name in ("rounds", "local_epochs", "personalise_epochs"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    settings = DemoSettings(**changes)
    table = RoundTable(sys.stdout)
    progress = EventProgressBar()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the processes as Ctrl-C does
    try:
        report = run_demo(args.out, settings, baselines=args.baselines, on_event=table.add,
                          listeners=(progress,), on_stage=lambda stage: print(f"-- {stage}", flush=True),
                          join_site=args.join_site)
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous)
    print()
    print(report_markdown(report))
    verdict = report.verdict()
    if verdict is not None:
        print(f"demo targets {'met' if verdict['met'] else 'NOT met'} (report.json: verdict)")
    print(f"Report written to {args.out / 'report.md'} (also report.json and the PNG charts)")
    return 0


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt
