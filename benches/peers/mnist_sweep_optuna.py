"""The peer of benches/mnist_sweep.sh: the same 12-trial grid over
LeNet-300-100 on MNIST (lr x batch size x epochs), in Optuna calling a
PyTorch training loop, as a user would write it: MNIST read, split
(8.34% held out, stratified) and normalised (global mean and std of the
training part) once, then one training per trial (AdamW, cosine schedule,
the best epoch on the held-out part kept), scored on the 10 000 test digits.

  KILN_DATA=~/.cache/kiln/data python benches/peers/mnist_sweep_optuna.py [--threads 2]
"""
import argparse, os, struct, time

import numpy as np
import optuna
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
optuna.logging.set_verbosity(optuna.logging.WARNING)
t0 = time.perf_counter()

data = os.path.join(os.environ.get("KILN_DATA", os.path.expanduser("~/.cache/kiln/data")), "mnist")


def idx(name):
    with open(os.path.join(data, name), "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


x_train = idx("train-images.idx3-ubyte").reshape(60000, -1).astype(np.float32)
y_train = idx("train-labels.idx1-ubyte").astype(np.int64)
x_test = idx("t10k-images.idx3-ubyte").reshape(10000, -1).astype(np.float32)
y_test = idx("t10k-labels.idx1-ubyte").astype(np.int64)
rng = np.random.default_rng(1)
hold = np.zeros(len(y_train), dtype=bool)
for c in range(10):
    members = np.flatnonzero(y_train == c)
    hold[rng.choice(members, int(round(len(members) * 0.0834)), replace=False)] = True
mean, std = x_train[~hold].mean(), x_train[~hold].std()
norm = lambda x: torch.from_numpy((x - mean) / std)
xt, yt = norm(x_train[~hold]), torch.from_numpy(y_train[~hold])
xv, yv = norm(x_train[hold]), torch.from_numpy(y_train[hold])
xs, ys = norm(x_test), torch.from_numpy(y_test)
prep = time.perf_counter() - t0


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def objective(trial):
    lr = trial.suggest_categorical("lr", [0.0005, 0.001, 0.002])
    batch = trial.suggest_categorical("batch", [64, 128])
    epochs = trial.suggest_categorical("epochs", [1, 2])
    torch.manual_seed(trial.number)
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = epochs * ((len(yt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    best, best_state = -1.0, None
    for _ in range(epochs):
        perm = torch.randperm(len(yt))
        for i in range(0, len(yt), batch):
            b = perm[i : i + batch]
            opt.zero_grad()
            F.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
            sched.step()
        v = accuracy(model, xv, yv)
        if v > best:
            best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
    model.load_state_dict(best_state)
    return accuracy(model, xs, ys)


grid = {"lr": [0.0005, 0.001, 0.002], "batch": [64, 128], "epochs": [1, 2]}
study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(grid, seed=1))
study.optimize(objective, n_trials=12)
total = time.perf_counter() - t0
print(f"best {study.best_value:.4f} with {study.best_params}")
print(f"data read and prepared once: {prep:.1f} s; 12 trials; total {total:.1f} s ({a.threads} threads)")
