"""Write the reviews task of `reviews_csv.py` as a `datasets` folder (`DatasetDict.save_to_disk`): `reviews/` with
splits train and validation, columns `review` and `verdict`, the verdict a ClassLabel in the order negative, mixed,
positive (kept as the task's classes, not re-sorted), for the README's `kdlora train --dataset reviews` example.

    kdlora data fetch movie-snippets && python examples/reviews_dataset.py [TRAIN_ROWS] [DEV_ROWS]
"""

import sys

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, disable_progress_bars
from reviews_csv import reviews

FEATURES = Features(review=Value("string"), verdict=ClassLabel(names=["negative", "mixed", "positive"]))


def main(train_rows: int = 1200, dev_rows: int = 300) -> None:
    splits = {split: Dataset.from_dict({"review": [r for r, _ in rows], "verdict": [v for _, v in rows]},
                                       features=FEATURES)
              for split, rows in reviews(train_rows, dev_rows).items()}
    disable_progress_bars()
    DatasetDict(splits).save_to_disk("reviews")
    print(", ".join(f"{split}: {len(data)} rows" for split, data in splits.items()) + " -> reviews/")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))
