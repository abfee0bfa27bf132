"""One module per `fedseg` subcommand; each defines register(subparsers) and keeps heavy imports
(torch, MONAI, Flower) inside its handler so `fedseg --help` stays instant."""
