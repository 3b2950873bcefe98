"""Sample data for docs/examples/loans/loans.yaml: loan applications as JSON lines and,
much later, their outcome. Standard library only, seeded, so anyone can reproduce it.

    python docs/examples/loans/make_data.py --out /tmp/loans --n 5000
    # /tmp/loans/events.jsonl  {"application_id": "app-000001", "product": "Card – Gold", ...}
    # /tmp/loans/labels.jsonl  {"application_id": "app-000001", "defaulted": false, "decided_at": ...}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
from pathlib import Path

PRODUCTS = {"Card – Gold": 0.2, "Loan (personal)": 0.8, "Mortgage/Fixed 10y": -0.6, "BNPL: 3×": 1.2,
            "Auto & Moto": 0.1}
REGIONS = ["Île-de-France", "North & East", "São Paulo", "N/A"]
SECTORS = ["public", "retail & trade", "IT/software", "health-care", None, None]


def records(n: int, seed: int, start: dt.datetime) -> tuple[list[dict], list[dict]]:
    """``n`` applications over ``n`` minutes from ``start``, and their outcome a day to a month later."""
    rng = random.Random(seed)
    events, labels = [], []
    for i in range(n):
        product = rng.choice(list(PRODUCTS))
        income = round(rng.lognormvariate(10.5, 0.5), 2)
        amount = round(min(max(rng.lognormvariate(9.0, 0.9), 100.0), 500000.0), 2)
        age = rng.randint(18, 80)
        coapplicant = rng.random() < 0.3
        existing = rng.choice([True, False, None])
        submitted = start + dt.timedelta(minutes=i, seconds=rng.randint(0, 59))
        logit = (-4.5 + 2.2 * math.log1p(amount / income * 10) + PRODUCTS[product] - 0.8 * coapplicant
                 - 0.02 * (age - 40) - (0.5 if existing else 0.0))
        defaulted = rng.random() < 1 / (1 + math.exp(-logit))
        event = {"application_id": f"app-{i:06d}", "product": product, "region": rng.choice(REGIONS),
                 "income": income, "amount": amount, "age": age, "has_coapplicant": coapplicant,
                 "submitted_at": submitted.isoformat().replace("+00:00", "Z")}
        if existing is not None:
            event["existing_customer"] = existing
        sector = rng.choice(SECTORS)
        if sector is not None:
            event["employer_sector"] = sector
        events.append(event)
        decided = submitted + dt.timedelta(days=rng.randint(1, 30))
        labels.append({"application_id": event["application_id"], "defaulted": defaulted,
                       "decided_at": decided.isoformat().replace("+00:00", "Z")})
    return events, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for events.jsonl and labels.jsonl")
    parser.add_argument("--n", type=int, default=5000, help="number of applications (default 5000)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--start", default="2024-03-01T00:00:00+00:00", help="first submission time")
    args = parser.parse_args()
    events, labels = records(args.n, args.seed, dt.datetime.fromisoformat(args.start))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("events", events), ("labels", labels)):
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(f"{len(events)} events and {len(labels)} labels in {args.out}")


if __name__ == "__main__":
    main()
