"""`fedseg keys KIND ...`: make the keys a federation needs, one sub-command per kind.

`fedseg keys node --out DIR [--name SITE]` makes a site's SuperNode authentication key pair; the
server's site_public_keys list admits the public half. `fedseg keys he --out DIR` makes the HE
contexts of encrypted aggregation: secret.ctx for every site, public.ctx for the server.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="make federation keys (a site's node key pair, the HE contexts)",
        description="Make the keys a federation needs.",
    )
    kinds = parser.add_subparsers(title="kinds", metavar="KIND", required=True)
    _register_node(kinds)
    _register_he(kinds)


def _register_node(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser(
        "node",
        help="a site's authentication key pair for the SuperLink",
        description="Write NAME.key (private, mode 0600, stays at the site) and NAME.pub (give it to the "
                    "federation operator for server.toml's [auth] site_public_keys). Never overwrites.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the key pair into")
    parser.add_argument("--name", default="node", metavar="SITE", help="file name stem (default: node)")
    parser.set_defaults(handler=run_node)


def run_node(args: argparse.Namespace) -> int:
    from federation.keys import generate_node_keys

    pair = generate_node_keys(args.out, args.name)
    print(f"private key: {pair.private_key} (keep it at this site; site.toml [auth] node_private_key)")
    print(f"public key:  {pair.public_key}")
    print(f"fingerprint: {pair.fingerprint}")
    return 0


def _register_he(kinds: argparse._SubParsersAction) -> None:
    parser = kinds.add_parser(
        "he",
        help="the HE contexts of homomorphically encrypted aggregation",
        description="Write secret.ctx (mode 0600: copy it to every site, site.toml [he] secret_context; "
                    "never to the server) and public.ctx (server.toml [he] public_context: it can add "
                    "encrypted updates but not read them), 128-bit secure. Never overwrites.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the two contexts into")
    parser.set_defaults(handler=run_he)


def run_he(args: argparse.Namespace) -> int:
    from federation.he.context import write_he_keys

    files = write_he_keys(args.out)
    print(f"secret context: {files.secret_context} (for every site, site.toml [he] secret_context; "
          "never give it to the server)")
    print(f"public context: {files.public_context} (for the server, server.toml [he] public_context)")
    print(f"fingerprint:    {files.fingerprint} (the server and every site show it; compare them)")
    return 0
