"""`droptune data list|download|verify|info`: the registered datasets, get one, check a dataset folder, describe
one."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from droptune.cli.arguments import count
from droptune.console import counted

DEFAULT_DATA_DIR = "data"


def default_data_dir() -> Path:
    """Where the `data` commands look unless --data-dir says otherwise: $DROPTUNE_DATA_DIR, else ./data."""
    return Path(os.environ.get("DROPTUNE_DATA_DIR") or DEFAULT_DATA_DIR)


def _download(args: argparse.Namespace) -> int:
    from droptune.data.download import MARKER, download, downloadable, read_marker

    data_dir = Path(args.data_dir or default_data_dir()).expanduser()
    earlier = read_marker(data_dir / downloadable(args.name).folder) is not None
    target = download(args.name, data_dir, args.source, args.keep_archives)
    marker = read_marker(target)
    counts = marker["images"]
    done = (f"already complete ({MARKER} of {marker.get('prepared', 'an earlier download')}, its image counts checked)"
            if earlier else f"complete ({MARKER} written)")
    print(f"{target}: {counted(len(counts), 'domain')}, {counted(sum(counts.values()), 'image')}, {done}")
    print(f"check that every image decodes with `droptune data verify {target}`")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from droptune.data.verify import resolve, verify

    root, spec = resolve(args.target, args.data_dir or default_data_dir())
    report = verify(root, spec, decode=not args.no_decode, workers=args.workers)
    print(report.render())
    return 0 if report.ok else 1


def _info(args: argparse.Namespace) -> int:
    from droptune.data.domains import require_class_folders
    from droptune.data.registry import BuiltinSpec, get_spec
    from droptune.data.verify import builtin_info, info, resolve

    spec = get_spec(args.target)
    if isinstance(spec, BuiltinSpec):
        print(builtin_info(spec.open(None)))
        return 0
    root, spec = resolve(args.target, args.data_dir or default_data_dir())
    require_class_folders(root)
    print(info(root, spec.name if spec else None))
    return 0


def _list(args: argparse.Namespace) -> int:
    from droptune.data.registry import DATASETS
    from droptune.data.verify import datasets_table

    print(datasets_table(DATASETS.values()))
    print("\ndomains and classes of one: `droptune data info NAME --data-dir DIR`; any folder laid out as "
          "<domain>/<class>/<image> is a dataset too (--dataset PATH)")
    return 0


def _downloadable() -> str:
    """The datasets with a download recipe, for help: "PACS, VLCS or Office31"."""
    from droptune.data.registry import DATASETS

    names = [spec.name for spec in DATASETS.values() if spec.recipe is not None]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _sources_help() -> str:
    from droptune.data.registry import DATASETS

    lines = ["files each dataset is built from (KEY: usual file name), for --source KEY=URL_OR_PATH:"]
    for spec in DATASETS.values():
        if spec.recipe is not None:
            files = ", ".join(f"{r.key}: {r.filename}" for r in spec.recipe.resources)
            lines.append(f"  {spec.name:<15} {files}")
    return "\n".join(lines)


def _counts_help() -> str:
    from droptune.data.registry import DATASETS
    from droptune.data.verify import datasets_table

    return "known image counts, checked when the folder is one of these datasets:\n" + \
        datasets_table(spec for spec in DATASETS.values() if spec.counts)


def add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="download, verify and describe datasets",
                               description="Get the DomainBed benchmarks and check any dataset folder.")
    jobs = data.add_subparsers(dest="data_command", required=True)
    data_dir_help = ("folder that holds the datasets (default: $DROPTUNE_DATA_DIR, else ./data; train and evaluate "
                     "have no ./data default: give them --data-dir or set $DROPTUNE_DATA_DIR)")

    downloadable = _downloadable()
    download = jobs.add_parser(
        "download", help=f"download, check and lay out {downloadable}",
        description="Download a DomainBed benchmark into DATA_DIR/<folder> in the layout droptune reads. "
                    "Interrupted downloads resume when the command is run again; a completion marker is "
                    "written only when every domain holds the expected number of images.",
        epilog=_sources_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    download.add_argument("name", metavar="NAME", help=downloadable)
    download.add_argument("--data-dir", type=Path, help=data_dir_help)
    download.add_argument("--source", action="append", default=[], metavar="[KEY=]URL_OR_PATH",
                          help="replace a file's usual source by a mirror URL or a local copy; a folder is "
                               "searched for the usual file names; repeatable")
    download.add_argument("--keep-archives", action="store_true",
                          help="keep the downloaded archives in DATA_DIR/.droptune-downloads")
    download.set_defaults(run=_download)

    verify = jobs.add_parser(
        "verify", help="check a dataset's layout, classes, image counts and that every image decodes",
        description="Check a registered dataset (by NAME, under --data-dir) or any folder laid out as "
                    "<domain>/<class>/<image>. Names every problem and exits with status 1 if there is one.",
        epilog=_counts_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("target", metavar="NAME|PATH")
    verify.add_argument("--data-dir", type=Path, help=data_dir_help)
    verify.add_argument("--no-decode", action="store_true", help="skip decoding the images (quick check)")
    verify.add_argument("--workers", type=count(1), help="threads that decode images (default: up to 4)")
    verify.set_defaults(run=_verify)

    listing = jobs.add_parser("list", help="the registered datasets: folders, domains, classes, image counts",
                              description="The datasets droptune knows by name; `download` says which it fetches.")
    listing.set_defaults(run=_list)

    info = jobs.add_parser("info", help="domains, classes and image counts of a dataset folder",
                           description="Describe any folder laid out as <domain>/<class>/<image>.")
    info.add_argument("target", metavar="PATH|NAME")
    info.add_argument("--data-dir", type=Path, help=data_dir_help)
    info.set_defaults(run=_info)
