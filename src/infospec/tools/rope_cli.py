"""``infospec rope CONFIG``: RoPE base feasibility verdict of a Hugging Face config.

``infospec rope --table`` prints the verdicts of the shipped table of published models
(:func:`infospec.tools.rope.published_rope_models`); ``--plot FILE.png`` and ``--html FILE``
write Men et al.'s ``B(m)`` figure and the verdict page of one config.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("rope", help="RoPE base feasibility for a context length")
    p.add_argument(
        "config", nargs="?", default=None, help="config.json or a model folder holding one"
    )
    p.add_argument(
        "--table",
        action="store_true",
        help="the verdicts of the shipped published models instead of one CONFIG",
    )
    p.add_argument("--context", type=int, default=None, help="default: max_position_embeddings")
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32", "fp64"), default="fp32")
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="write B(m) over m (PNG)")
    p.add_argument("--html", default=None, metavar="FILE", help="write the verdict as HTML")


def _table_text(rows: list[dict]) -> str:
    names = [r["bound"].split()[0] for r in rows[0]["verdict"].rows] if rows else []
    lines = [
        f"{'model':<24}{'L':>8}{'rope_theta':>12}{'b_eff':>10}{'d':>5} {'scaling':<9}"
        + "".join(f"{n[:9]:>10}" for n in names)
        + f"{'min B(m)':>10}  verdict"
    ]
    for r in rows:
        v = r["verdict"]
        marks = "".join(f"{'pass' if b['passed'] else 'FAIL':>10}" for b in v.rows)
        lines.append(
            f"{r['name']:<24}{r['context']:>8}{r['rope_theta']:>12.6g}"
            f"{r['effective_base']:>10.4g}{r['rotary_dim']:>5} "
            f"{r['scaling']:<9}{marks}{v.rows[-1]['actual']:>10.4f}  "
            f"{'feasible' if r['passed'] else 'NOT feasible'}"
        )
    lines.append("sources: infospec.tools.rope.published_rope_models() (hub_url, source per row)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .._errors import InputError
    from .rope import rope_feasibility, rope_table

    if args.table:
        if args.config is not None or args.plot or args.html:
            raise InputError(
                "infospec rope --table judges the shipped models: give no CONFIG, --plot or "
                "--html with it (run 'infospec rope CONFIG --plot FILE.png' for one model)."
            )
        rows = rope_table(context=args.context, dtype=args.dtype, eps=args.eps)
        if args.json:
            out = [
                {k: v for k, v in r.items() if k != "verdict"} | {"bounds": r["verdict"].rows}
                for r in rows
            ]
            print(json.dumps(out, indent=2))
        else:
            print(_table_text(rows))
        return 0
    if args.config is None:
        raise InputError(
            "infospec rope needs a CONFIG (config.json or a model folder), or --table for the "
            "shipped published models."
        )
    v = rope_feasibility(args.config, context=args.context, dtype=args.dtype, eps=args.eps)
    if args.plot:
        from .rope_report import write_rope_plot

        write_rope_plot(v, args.plot, title=f"{args.config}: Men et al. B(m), L = {v.context}")
    if args.html:
        from .rope_report import write_rope_html

        meta = {"config": args.config, "context L": v.context, "dtype": args.dtype, "eps": args.eps}
        write_rope_html(v, args.html, title=f"RoPE feasibility: {args.config}", meta=meta)
    print(v.to_json() if args.json else v.to_text())
    return 0 if v.passed else 1
