"""A compact port of DFR^Tr_Val's tuning and evaluation (PolinaKirichenko/deep_feature_reweighting
``dfr_evaluate_spurious.py``: ``dfr_on_validation_tune`` and ``dfr_on_validation_eval`` with the
script's defaults ``balance_val=True``, ``add_train=False``, ``preprocess=True``, L1, liblinear).
The global ``np.random`` as in the original; the test seeds it. Returns the averaged coefficients
instead of test accuracies."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def dfr_on_validation_tune(x_val, y_val, g_val, c_options, num_retrains=1):
    worst_accs = {}
    for i in range(num_retrains):
        n_val = len(x_val) // 2
        idx = np.arange(len(x_val))
        np.random.shuffle(idx)
        x_valtrain, y_valtrain, g_valtrain = x_val[idx[n_val:]], y_val[idx[n_val:]], g_val[idx[n_val:]]
        n_groups = np.max(g_valtrain) + 1
        g_idx = [np.where(g_valtrain == g)[0] for g in range(n_groups)]
        min_g = np.min([len(g) for g in g_idx])
        for g in g_idx:
            np.random.shuffle(g)
        x_valtrain = np.concatenate([x_valtrain[g[:min_g]] for g in g_idx])
        y_valtrain = np.concatenate([y_valtrain[g[:min_g]] for g in g_idx])
        x_ho, y_ho, g_ho = x_val[idx[:n_val]], y_val[idx[:n_val]], g_val[idx[:n_val]]
        n_groups = np.max(g_val) + 1
        scaler = StandardScaler()
        x_train = scaler.fit_transform(x_valtrain)
        x_ho = scaler.transform(x_ho)
        for c in c_options:
            logreg = LogisticRegression(penalty="l1", C=c, solver="liblinear", class_weight={0: 1.0, 1: 1.0})
            logreg.fit(x_train, y_valtrain)
            preds = logreg.predict(x_ho)
            worst = np.min([(preds == y_ho)[g_ho == g].mean() for g in range(n_groups)])
            worst_accs[c] = worst if i == 0 else worst_accs[c] + worst
    ks, vs = list(worst_accs.keys()), list(worst_accs.values())
    return ks[np.argmax(vs)]


def dfr_on_validation_eval(c, x_train_all, x_val_all, y_val_all, g_val_all, num_retrains=20):
    coefs, intercepts = [], []
    scaler = StandardScaler()
    scaler.fit(x_train_all)
    for _ in range(num_retrains):
        n_groups = np.max(g_val_all) + 1
        g_idx = [np.where(g_val_all == g)[0] for g in range(n_groups)]
        min_g = np.min([len(g) for g in g_idx])
        for g in g_idx:
            np.random.shuffle(g)
        x_val = np.concatenate([x_val_all[g[:min_g]] for g in g_idx])
        y_val = np.concatenate([y_val_all[g[:min_g]] for g in g_idx])
        train_idx = np.arange(len(x_train_all))
        np.random.shuffle(train_idx)  # add_train=False: the subset drawn is empty
        logreg = LogisticRegression(penalty="l1", C=c, solver="liblinear", class_weight={0: 1.0, 1: 1.0})
        logreg.fit(scaler.transform(x_val), y_val)
        coefs.append(logreg.coef_)
        intercepts.append(logreg.intercept_)
    return np.mean(coefs, axis=0), np.mean(intercepts, axis=0), scaler
