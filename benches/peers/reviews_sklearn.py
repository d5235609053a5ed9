"""scikit-learn's text baselines on the reviews split kiln uses, as the peer
of pipelines/reviews-tfidf.yaml (BENCHMARKS.md, "Classical baselines"):

  kiln run benches/peers/reviews_split.yaml --out DIR
  python3 benches/peers/reviews_sklearn.py DIR

prints test accuracy and fit time (vectorizing included, best of 5) of
tf-idf 1-2-grams + logistic regression (lbfgs, several C) and of 1-2-gram
counts + multinomial naive Bayes.
"""
import json
import sys
import time

from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB


def load(path):
    rows = json.load(open(path))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def best_of(runs, fit):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model = fit()
        times.append(time.perf_counter() - t0)
    return model, min(times)


def main(folder):
    x_train, y_train = load(f"{folder}/train.json")
    x_test, y_test = load(f"{folder}/test.json")
    n = len(x_train)
    print(f"{n} training reviews, {len(x_test)} test reviews")
    for c in [1.0, 4.0, 10.0, 30.0]:
        def fit():
            vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
            clf = LogisticRegression(C=c, max_iter=1000).fit(vec.fit_transform(x_train), y_train)
            return vec, clf
        (vec, clf), secs = best_of(5, fit)
        acc = clf.score(vec.transform(x_test), y_test)
        # Two classes: kiln's softmax over two outputs with penalty l2 is
        # scikit-learn's binary logistic regression with C = 2 / (l2 · n).
        print(f"tf-idf 1-2-grams + logistic regression C={c:g} (kiln l2 = {2 / (c * n):.3g}): "
              f"{len(vec.vocabulary_)} terms, accuracy {acc:.4f}, fit {secs * 1e3:.0f} ms")

    def fit_nb():
        vec = CountVectorizer(ngram_range=(1, 2))
        return vec, MultinomialNB(alpha=1.0).fit(vec.fit_transform(x_train), y_train)
    (vec, nb), secs = best_of(5, fit_nb)
    acc = nb.score(vec.transform(x_test), y_test)
    print(f"1-2-gram counts + multinomial naive Bayes (alpha 1): {len(vec.vocabulary_)} terms, "
          f"accuracy {acc:.4f}, fit {secs * 1e3:.0f} ms")


if __name__ == "__main__":
    main(sys.argv[1])
