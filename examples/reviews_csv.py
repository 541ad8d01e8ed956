"""Write a user-style task from the offline movie snippets: reviews-train.csv and reviews-dev.csv with columns
`review` and `verdict` (negative / mixed / positive by the mean human rating), for the README's examples.

    kdlora data fetch movie-snippets && python examples/reviews_csv.py [TRAIN_ROWS] [DEV_ROWS]
"""

import csv
import random
import sys

from kdlora.data.snippets import fetch_snippets, split_of


def verdict(rating: float) -> str:
    return "negative" if rating <= -1 else "positive" if rating >= 1 else "mixed"


def reviews(train_rows: int, dev_rows: int) -> dict[str, list[tuple[str, str]]]:
    """(review, verdict) rows of the snippets' train and validation splits, shuffled, at most as many as asked."""
    rows = {"train": [], "validation": []}
    for line in fetch_snippets().read_text(encoding="utf-8").splitlines():
        snippet_id, rating, text = line.split("\t", 2)
        split = split_of(snippet_id)
        if split in rows:
            rows[split].append((text.strip(), verdict(float(rating))))
    for examples in rows.values():
        random.Random(0).shuffle(examples)  # the source file is ordered by rating
    return {"train": rows["train"][:train_rows], "validation": rows["validation"][:dev_rows]}


def main(train_rows: int = 1200, dev_rows: int = 300) -> None:
    rows = reviews(train_rows, dev_rows)
    for split, name in (("train", "reviews-train.csv"), ("validation", "reviews-dev.csv")):
        with open(name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["review", "verdict"])
            writer.writerows(rows[split])
        print(f"{name}: {len(rows[split])} rows")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
