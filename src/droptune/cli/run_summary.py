"""Printing a run's results for people."""

from __future__ import annotations

from droptune.runs.results import collapse_explanation


def print_run(results: dict) -> None:
    if results["status"] != "completed":
        print(f"{results['run']}: {results['status']} after {results['steps_done']} steps")
        return
    print(f"\n{results['run']}: step {results['step']} chosen by {results['selection']} selection")
    print(f"{'domain':<20} {'split':<9} {'accuracy':>8}")
    for domain, splits in results["acc"].items():
        role = "test" if domain == results["test_domain"] else "train"
        for split, acc in splits.items():
            print(f"{domain:<20} {role + '/' + split:<9} {100 * acc:>7.1f}%")
    print(f"i.i.d. {100 * results['iid']:.1f}%   o.o.d. {100 * results['ood']:.1f}%   "
          f"{results['train_images_per_s']:.0f} train images/s   {results['wall_time_s']:.0f} s")
    if results["collapsed"]:
        print(f"WARNING: collapsed: {collapse_explanation(results['iid'], results['majority_rate'])}")
