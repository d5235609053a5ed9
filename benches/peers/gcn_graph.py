"""A stochastic-block-model graph like benches/gnn.rs builds (10 000 nodes,
4 communities, 32 features), for two uses:

  python3 gcn_graph.py write DIR DEGREE   write DIR/nodes.csv, DIR/edges.csv
                                          (to measure kiln's memory with
                                          /usr/bin/time -v kiln run ...)
  python3 gcn_graph.py torch DEGREE       time PyTorch full-batch GCN epochs
                                          (2 layers, 16 hidden, Adam, sparse
                                          adjacency, validation every epoch)
"""
import random
import sys
import time

NODES, FEATURES, EPOCHS = 10_000, 32, 10


def graph(degree, seed=5):
    rng = random.Random(seed)
    feats = [[(0.5 if f % 4 == i % 4 else 0.0) + rng.uniform(-1, 1) for f in range(FEATURES)]
             for i in range(NODES)]
    edges = []
    for i in range(NODES):
        for _ in range(degree // 2):
            j = 4 * rng.randrange(NODES // 4) + i % 4 if rng.random() < 0.8 else rng.randrange(NODES)
            edges.append((i, j))
    return feats, edges


def write(folder, degree):
    feats, edges = graph(degree)
    with open(f"{folder}/nodes.csv", "w") as f:
        f.write("node,community," + ",".join(f"f{k}" for k in range(FEATURES)) + "\n")
        for i, row in enumerate(feats):
            f.write(f"{i},c{i % 4}," + ",".join(f"{v:.3f}" for v in row) + "\n")
    with open(f"{folder}/edges.csv", "w") as f:
        f.write("source,target\n")
        f.writelines(f"{a},{b}\n" for a, b in edges)


def torch_epochs(degree, threads):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    feats, edges = graph(degree)
    x = torch.tensor(feats)
    y = torch.tensor([i % 4 for i in range(NODES)])
    src = [a for a, b in edges if a != b] + [b for a, b in edges if a != b] + list(range(NODES))
    dst = [b for a, b in edges if a != b] + [a for a, b in edges if a != b] + list(range(NODES))
    deg = torch.zeros(NODES).index_add_(0, torch.tensor(dst), torch.ones(len(dst)))
    w = (deg[src] * deg[dst]).rsqrt()
    adj = torch.sparse_coo_tensor(torch.tensor([dst, src]), w, (NODES, NODES)).coalesce().to_sparse_csr()
    perm = torch.randperm(NODES)
    train, valid = perm[:1000], perm[1000:2000]
    l1, l2 = torch.nn.Linear(FEATURES, 16), torch.nn.Linear(16, 4)
    opt = torch.optim.Adam(list(l1.parameters()) + list(l2.parameters()), lr=0.01)

    def forward(training):
        h = torch.nn.functional.dropout(x, 0.5, training)
        h = torch.relu(adj @ l1(h))
        h = torch.nn.functional.dropout(h, 0.5, training)
        return adj @ l2(h)

    def run():
        for _ in range(EPOCHS):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(forward(True)[train], y[train])
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch.nn.functional.cross_entropy(forward(False)[valid], y[valid])

    run()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - t) / EPOCHS)
    print(f"torch {torch.__version__} threads {threads} degree {degree}: {best * 1000:.2f} ms/epoch")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]))
    else:
        for threads in (1, 2):
            torch_epochs(int(sys.argv[2]), threads)
