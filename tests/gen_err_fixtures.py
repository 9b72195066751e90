#!/usr/bin/env python3
"""Writes tests/fixtures/err/*.traj: bad programs, each with the errors it must produce.

Each case is (name, description, source, [(code, anchor, occurrence)]): the expected error
starts at the `occurrence`-th (1-based) appearance of `anchor` in the source, so the
expected line:column is stated by intent, not copied from the checker's output. The file's
header lines `# error: CODE LINE:COL` are what tests/check_fixtures.rs asserts.
Run: python3 tests/gen_err_fixtures.py
"""
import os

CASES = [
    # ---- syntax
    ("syntax_missing_value", "a definition without a value", "const n = 10\nconst m =\ndata X = randn(n, n)\n", [("E0001", "\ndata", 1)]),
    ("syntax_unclosed_paren", "an unclosed parenthesis", "const n = 3\ndata X = (randn(n, n)\n", [("E0001", "", -1)]),
    ("syntax_trailing_dot", "`1.` is not a number", "const a = 1.\nconst b = 2\n", [("E0001", ".\n", 1)]),
    ("syntax_chained_comparison", "comparisons do not chain", "const a = 1, b = 2, c = 3\nconst d = a < b < c\n", [("E0004", "< c", 1)]),
    ("syntax_if_as_operand", "`if` is not an operand without parentheses", "const x = 1\nconst y = 1 + if x then 1 else 2\n", [("E0001", "if x", 1)]),
    ("syntax_not_an_item", "a statement that is no item", "const n = 3\nfoo = 3\n", [("E0001", "foo", 1)]),
    ("syntax_reserved_word", "a reserved word as a name", "const for = 3\n", [("E0001", "for", 1)]),
    ("syntax_subscript_digit", "subscript digits are not identifier characters", "const α₀ = 1\n", [("E0001", "₀", 1)]),
    ("syntax_bad_escape", "an unknown string escape", "data X = load(\"a\\q.npy\")\n", [("E0003", "\"a", 1), ("E0801", "\"a", 1)]),
    ("syntax_int_too_large", "an int literal beyond 64 bits", "const n = 99999999999999999999\n", [("E0002", "999", 1)]),
    ("syntax_empty_index", "an empty index", "data X = randn(3, 3)\nlet y = X[]\n", [("E0001", "X[]", 1)]),
    ("syntax_two_errors", "two broken items both reported", "const a = )\nconst b = 2\ndata X = randn(b,, b)\nconst c = b\n", [("E0001", ")", 1), ("E0001", ", b)", 1)]),
    ("syntax_missing_then", "`if` without `then`", "const a = 1\nconst b = if a 2 else 3\n", [("E0001", "2 else", 1)]),
    ("syntax_broken_loss_still_defined", "a broken loss: no second error saying there is none", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n  record every 1 { loss, g = grad(w) }\n}\n", [("E0001", "train", 1)]),
    ("syntax_broken_const_still_defined", "a broken const: no second error where it is used", "const n = 2 +* 3\ndata X = randn(n, 2)\nparam w: [2] ~ zeros\nloss = mean((X @ w)^2)\n", [("E0001", "* 3", 1)]),
    ("syntax_unclosed_train", "an unclosed `train {` at the end of the file", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10", [("E0001", "", -1)]),
    ("syntax_unclosed_bracket_before_item", "an unclosed `[` before the next item", "const n = 3\ndata X = [randn(n), randn(n)\nconst m = 2\n", [("E0001", "const m", 1)]),
    ("syntax_float_too_large", "a float literal beyond the floats' range", "const a = 1e400\nconst b = -2.5e308 * a\n", [("E0002", "1e400", 1), ("E0002", "2.5e308", 1)]),
    # ---- names
    ("name_std_hint", "a name the standard library defines, without its `use`", "param w: [3] ~ normal(0, 1)\nloss = square_loss(w, w)\n", [("E0101", "square_loss", 1)]),
    ("name_undefined", "an undefined name", "const n = 3\ndata X = randn(n, m)\n", [("E0101", "m)", 1)]),
    ("name_typo_hint", "an undefined name close to a defined one", "const depth = 3\ndata X = randn(dpeth, 2)\n", [("E0101", "dpeth", 1)]),
    ("name_duplicate", "a name defined twice", "const n = 3\ndata X = randn(n)\nconst n = 4\n", [("E0102", "n = 4", 1)]),
    ("name_duplicate_module", "a name defined in the program and in a used file", "use \"lib/defs_n.traj\"\nconst n = 4\n", [("E0102", "n = 4", 1)]),
    ("name_duplicate_unicode_module", "a clash with a module whose text is not ASCII", "use \"lib/unicode_fn.traj\"\nfn foo(x) = x\n", [("E0102", "foo", 1)]),
    ("name_unknown_std_module", "an unknown standard module", "use std.optimizers\nconst n = 1\n", [("E0103", "use", 1)]),
    ("name_missing_file_module", "a used file that does not exist", "use \"lib/nowhere.traj\"\nconst n = 1\n", [("E0103", "use", 1)]),
    ("name_missing_module_defines_nothing_missing", "names a module that cannot be loaded might define are not reported", "use \"lib/nowhere.traj\"\nuse std.lossess\nparam w: [2] ~ zeros\nloss = square_loss(w, w) + helper(w)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 1\n}\n", [("E0103", "use \"", 1), ("E0103", "use std", 1)]),
    ("name_call_non_function", "calling a const", "const n = 3\nconst m = n(2)\n", [("E0104", "n(2)", 1)]),
    ("name_function_as_value", "a function used as a value", "fn f(x) = 2 * x\nconst m = f + 1\n", [("E0104", "f + 1", 1)]),
    ("name_grad_outside_optimizer", "`grad` outside an optimizer body", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n  record every 1 { g = grad }\n}\n", [("E0101", "grad }", 1)]),
    ("name_fn_undefined_in_body", "an undefined name in a function never called", "fn f(x) = x + y\nconst n = 1\n", [("E0101", "y\n", 1)]),
    ("name_local_not_visible_in_callee", "a function cannot see its caller's locals", "fn g(x) = x + h\nfn f(h) = g(h)\nconst n = f(1)\n", [("E0101", "h\n", 1)]),
    # ---- types
    ("type_float_shape", "a float as a shape (hint: //)", "const n = 10\nparam W: [n / 2, n] ~ normal(0, 1)\n", [("E0201", "n / 2", 1)]),
    ("type_float_index", "a float as an index", "const n = 4\ndata X = randn(n, n)\nlet y = X[n / 2]\n", [("E0201", "n / 2]", 1)]),
    ("type_float_range", "a float as a range bound", "const n = 4\ndata X = stack([randn(2) for i in 0..n / 2])\n", [("E0201", "n / 2", 1)]),
    ("type_float_dims", "a float const as a dimension", "const h = 2.5\ndata X = zeros(h, 3)\n", [("E0201", "h, 3", 1)]),
    ("type_int_division_by_zero", "integer division by zero", "const a = 7\nconst b = a // 0\n", [("E0203", "0\n", 1)]),
    ("type_string_value", "a string used as a value", "const n = 3\ndata X = \"data.npy\" + 1\n", [("E0205", "\"data", 1)]),
    ("type_unknown_shape", "a shape that depends on data values", "data k = randint(1, 5)\nparam w: [k] ~ normal(0, 1)\n", [("E0206", "k]", 1)]),
    ("type_int_overflow", "compile-time int arithmetic beyond 64 bits", "const n = 2^63\nparam w: [n % 4] ~ zeros\n", [("E0202", "2^63", 1)]),
    ("type_seed_negative", "a negative seed", "const seed = -1\nconst n = 2\n", [("E0207", "-1", 1)]),
    ("type_seed_float_in_sweep", "a float seed in a sweep", "const lr = 0.1\nsweep {\n  seed in [0, 0.5]\n}\n", [("E0207", "seed in", 1)]),
    ("type_float_onehot", "onehot of float indices", "data y = randn(5)\ndata Y = onehot(y, 3)\n", [("E0201", "y, 3", 1)]),
    # ---- kinds
    ("kind_param_in_data", "a param inside data", "param w: [3] ~ normal(0, 1)\ndata X = 2 * w\n", [("E0401", "w\n", 1)]),
    ("kind_param_in_const", "a param inside a const", "param w: [] ~ normal(0, 1)\nconst c = w + 1\n", [("E0401", "w + 1", 1)]),
    ("kind_observable_in_loss", "an observable inside the loss", "param W: [3, 3] ~ normal(0, 1)\nloss = sum(W^2) + spectral(W)\n", [("E0402", "spectral", 1)]),
    ("kind_observable_via_let", "an observable reaching the loss through a let", "param W: [3, 3] ~ normal(0, 1)\nlet top = svals(W)[0]\nloss = sum(W^2) + top\n", [("E0402", "svals", 1)]),
    ("kind_assign_grad", "assigning grad in an optimizer", "optimizer clipped(lr) {\n  grad = clamp(grad, -1, 1)\n  param -= lr * grad\n}\n", [("E0403", "grad =", 1)]),
    ("kind_batch_in_data", "a batch name in data", "data X = randn(10, 2)\nbatch xb from X size 4\ndata Z = 2 * xb\n", [("E0404", "xb\n", 1)]),
    ("kind_sample_in_data", "a sample name in data", "sample z = randn(3)\ndata Z = z + 1\n", [("E0404", "z + 1", 1)]),
    ("kind_param_two_rules", "a param given two rules", "param W: [2, 2] ~ normal(0, 1)\nloss = sum(W^2)\ntrain {\n  optimizer gd(lr = 0.1) for W\n  optimizer adam(lr = 0.1) for W\n  steps 10\n}\n", [("E0405", "W\n  steps", 1)]),
    ("kind_two_default_rules", "two default rules", "param W: [2, 2] ~ normal(0, 1)\nloss = sum(W^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  optimizer adam\n  steps 10\n}\n", [("E0405", "optimizer adam", 1)]),
    ("kind_param_no_rule", "a param with no rule", "param W: [2, 2] ~ normal(0, 1)\nparam b: [2] ~ zeros\nloss = sum(W^2) + sum(b^2)\ntrain {\n  optimizer gd(lr = 0.1) for W\n  steps 10\n}\n", [("E0406", "b:", 1)]),
    ("kind_random_in_let", "a random draw in a let", "param w: [3] ~ normal(0, 1)\nlet noisy = w + randn(3)\nloss = sum(noisy^2)\n", [("E0407", "randn", 1)]),
    ("kind_random_in_loss", "a random draw in the loss", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2) + sum(rand(3))\n", [("E0407", "rand(3)", 1)]),
    ("kind_grad_in_hyperparameter", "`grad` in a hyperparameter", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1 / norm(grad))\n  steps 10\n}\n", [("E0408", "grad)", 1)]),
    ("kind_no_loss", "a train block without a loss", "param w: [3] ~ normal(0, 1)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n}\n", [("E0409", "train", 1)]),
    ("kind_assign_non_state", "assigning a name that is not a state", "optimizer odd(lr) {\n  let g = grad\n  g = 2 * g\n  param -= lr * g\n}\n", [("E0410", "g = 2", 1)]),
    ("kind_not_a_distribution", "`~` with something that is no distribution", "param w: [3] ~ randn(3)\n", [("E0412", "randn", 1)]),
    ("kind_unknown_precision", "an unknown precision", "precision f16\nconst n = 1\n", [("E0413", "f16", 1)]),
    ("kind_optimizer_as_rule_target", "an optimizer rule for a non-param", "param w: [3] ~ normal(0, 1)\ndata X = randn(3)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1) for w, X\n  steps 10\n}\n", [("E0104", "X\n", 1)]),
    # ---- arity
    ("arity_builtin_too_many", "too many arguments to a builtin", "data X = randn(3, 3)\ndata Y = exp(X, 2)\n", [("E0501", "2)", 1)]),
    ("arity_fn_missing", "a missing argument to a function", "fn f(x, y) = x + y\nconst a = f(1)\n", [("E0501", "f(1)", 1)]),
    ("arity_unknown_keyword", "an unknown keyword argument", "data X = randn(3, 3)\ndata s = sum(X, axes = 0)\n", [("E0502", "axes", 1)]),
    ("arity_repeated_argument", "an argument given twice", "fn f(x, y = 2) = x + y\nconst a = f(1, x = 3)\n", [("E0503", "x = 3", 1)]),
    ("arity_optimizer_missing_lr", "an optimizer without its required hyperparameter", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd\n  steps 10\n}\n", [("E0501", "gd\n", 1)]),
    # ---- recursion and cycles
    ("cycle_recursion", "a function that calls itself", "fn f(x) = if x > 0 then f(x - 1) else 0\nconst a = f(3)\n", [("E0601", "f(x - 1)", 1)]),
    ("cycle_mutual_recursion", "two functions calling each other", "fn even(x) = odd(x - 1)\nfn odd(x) = even(x - 1)\n", [("E0601", "odd(x", 1), ("E0601", "even(x", 2)]),
    ("cycle_lets", "lets that depend on each other", "param w: [3] ~ normal(0, 1)\nlet a = b + w\nlet b = 2 * a\nloss = sum(a^2)\n", [("E0602", "a\nloss", 1)]),
    ("cycle_consts", "a const cycle", "const a = b + 1\nconst b = a * 2\n", [("E0602", "a * 2", 1)]),
    ("cycle_param_inits", "params initialized from each other", "param U: [2, 2] = V'\nparam V: [2, 2] = U\n", [("E0602", "U\n", 1)]),
    # ---- consts
    ("const_not_scalar", "a const that is a tensor", "const v = [1, 2, 3]\n", [("E0303", "[1", 1)]),
    # ---- shapes
    ("shape_broadcast", "operands that do not broadcast", "data X = randn(4, 3)\ndata Y = randn(4)\ndata Z = X + Y\n", [("E0301", "X + Y", 1)]),
    ("shape_matmul", "inner dimensions that differ", "data X = randn(4, 3)\ndata W = randn(4, 3)\ndata Z = X @ W\n", [("E0302", "X @ W", 1)]),
    ("shape_loss_not_scalar", "a loss that is a vector", "param w: [3] ~ normal(0, 1)\nloss = w^2\n", [("E0303", "w^2", 1)]),
    ("shape_param_init", "a param initializer of the wrong shape", "const d = 4\nparam W: [d, d] = eye(d + 1)\n", [("E0304", "eye", 1)]),
    ("shape_index_out_of_range", "a constant index out of range", "param W: [3, 4, 4] ~ normal(0, 1)\nlet E = W[3]\n", [("E0305", "3]", 1)]),
    ("shape_slice_out_of_range", "a slice past the end", "data v = randn(5)\ndata u = v[2:7]\n", [("E0305", "7]", 1)]),
    ("shape_axis_out_of_range", "a reduction axis that does not exist", "data X = randn(4, 3)\ndata s = sum(X, axis = 2)\n", [("E0306", "2)", 1)]),
    ("shape_transpose_vector", "`'` of a vector", "data v = randn(5)\ndata u = v'\n", [("E0307", "v'", 1)]),
    ("shape_svals_vector", "singular values of a vector", "param w: [5] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n  record every 1 { s = svals(w) }\n}\n", [("E0307", "w) }", 1)]),
    ("shape_reshape", "a reshape that changes the entry count", "data X = randn(4, 3)\ndata Y = reshape(X, [5, 2])\n", [("E0308", "[5, 2]", 1)]),
    ("shape_list_elements", "array rows of unequal length", "data A = [[1, 2], [3]]\n", [("E0309", "[[1", 1)]),
    ("shape_gather_with_slice", "a gather mixed with a slice", "data X = randn(5, 3)\ndata idx = randint(0, 5, 4)\ndata Y = X[idx, 0:2]\n", [("E0310", "X[idx", 1)]),
    ("shape_gather_index_shapes", "gather indices of different shapes", "data A = randn(5, 5)\ndata r = randint(0, 5, 4)\ndata c = randint(0, 5, 3)\ndata v = A[r, c]\n", [("E0310", "c]", 1)]),
    ("shape_batch_rows", "batch sources with different row counts", "data X = randn(10, 2)\ndata y = randn(8)\nbatch xb, yb from X, y size 4\nparam w: [2] ~ zeros\nloss = mean((xb @ w - yb)^2)\n", [("E0311", "y size", 1)]),
    ("shape_shuffle_too_large", "a shuffled batch larger than the data", "data X = randn(10, 2)\nbatch xb from X size 16 shuffle\nparam w: [2] ~ zeros\nloss = mean((xb @ w)^2)\n", [("E0311", "16", 1)]),
    ("shape_optimizer_update", "an optimizer update of the wrong shape", "optimizer bad(lr) {\n  param -= lr * ones(7)\n}\n", [("E0301", "lr * ones", 1)]),
    ("shape_orthogonal_vector", "an orthogonal init for a vector", "param w: [5] ~ orthogonal(scale = 1)\n", [("E0307", "orthogonal", 1)]),
    ("shape_concat", "concatenating mismatched tensors", "data A = randn(2, 3)\ndata B = randn(2, 4)\ndata C = concat([A, B], 0)\n", [("E0309", "[A, B]", 1)]),
    ("shape_comprehension_varies", "comprehension elements whose shape depends on the index", "data X = stack([zeros(i + 1) for i in 0..3])\n", [("E0309", "zeros(i", 1)]),
    # ---- files, sweeps, records
    ("file_missing", "loading a file that does not exist", "data X = load(\"no_such_file.npy\")\n", [("E0801", "\"no_such", 1)]),
    ("sweep_not_const", "sweeping a name that is not a const", "const lr = 0.1\ndata X = randn(3)\nsweep {\n  lr in [0.1, 0.2]\n  X in [1, 2]\n}\n", [("E0101", "X in", 1)]),
    ("sweep_point_breaks_shape", "a sweep point that makes a shape float", "const n = 4\ndata X = zeros(n, 2)\nsweep {\n  n in [2, 2.5]\n}\n", [("E0201", "n, 2", 1)]),
    ("record_duplicate_name", "a record name used twice", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n  record every 1 { loss, loss }\n}\n", [("E0102", "loss }", 1)]),
    ("train_steps_float", "a float step count", "const n = 10\nparam w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps n / 2\n}\n", [("E0201", "n / 2", 1)]),
    ("train_time_without_flow", "`time` in a train block that is not a gradient flow", "param w: [2] ~ zeros\nloss = sum((w - 1)^2)\ntrain {\n  time 10\n  optimizer gd(lr = 0.1)\n}\n", [("E0414", "time 10", 1)]),
    ("train_flow_with_steps", "a gradient flow given `steps`", "param w: [2] ~ zeros\nloss = sum((w - 1)^2)\ntrain {\n  optimizer flow\n  steps 100\n  time 5\n}\n", [("E0414", "steps 100", 1)]),
    ("train_flow_without_time", "a gradient flow with no `time`", "param w: [2] ~ zeros\nloss = sum((w - 1)^2)\ntrain {\n  optimizer flow(rtol = 1e-8)\n}\n", [("E0414", "train", 1)]),
    ("train_flow_beside_rule", "`optimizer flow` beside another rule", "param w: [2] ~ zeros\nparam v: [2] ~ zeros\nloss = sum((w - v)^2)\ntrain {\n  optimizer flow\n  optimizer gd(lr = 0.1) for v\n  time 5\n}\n", [("E0414", "optimizer gd", 1)]),
    ("train_flow_bad_tolerance", "a tolerance and a time out of range, a record interval of 0", "param w: [2] ~ zeros\nloss = sum((w - 1)^2)\ntrain {\n  optimizer flow(rtol = -1e-6)\n  time -2\n  record every 0 { loss }\n}\n", [("E0305", "-1e-6", 1), ("E0305", "-2", 1), ("E0305", "0 {", 1)]),
    ("train_time_t_outside_flow", "`t`, a flow's time, in the record of a train block that runs by steps", "param w: [2] ~ zeros\nloss = sum((w - 1)^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n  record every 1 { loss, tt = t }\n}\n", [("E0101", "t }", 1)]),
    ("train_time_t_in_loss", "`t` exists in a flow's record entries and `stop when`, not in its loss", "param w: [2] ~ zeros\nloss = sum((w - 1)^2) * t\ntrain {\n  optimizer flow\n  time 1\n  record every 0.5 { loss, t2 = t * t }\n}\n", [("E0101", "t\ntrain", 1)]),
    ("stop_when_not_scalar", "a `stop when` condition that is a vector", "param w: [3] ~ normal(0, 1)\nloss = sum(w^2)\ntrain {\n  optimizer gd(lr = 0.1)\n  steps 10\n  stop when w < 1\n}\n", [("E0303", "w < 1", 1)]),
]

# Helper modules used by the cases above.
LIB = {
    "lib/defs_n.traj": "# A module that defines `n`, to clash with a program's own `n`.\nconst n = 3\n",
    # Non-ASCII text before the clashing name: the report's second header must still
    # name its true line and column (a regression: byte offsets misplaced it).
    "lib/unicode_fn.traj": "# αβγ — a module whose first line is not ASCII\nconst z = 1\nfn foo(x) = x\n",
}


def line_col(text, pos):
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, col


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "err")
    os.makedirs(os.path.join(here, "lib"), exist_ok=True)
    for rel, text in LIB.items():
        with open(os.path.join(here, rel), "w") as f:
            f.write(text)
    names = set()
    for name, desc, src, expected in CASES:
        assert name not in names, name
        names.add(name)
        header = "# %s\n" % desc + "".join("# error: %s LINE:COL\n" for _ in expected)
        full = header + src
        lines = ["# %s\n" % desc]
        for code, anchor, occ in expected:
            if occ == -1:
                pos = len(full)  # end of file
            else:
                pos = -1
                for _ in range(occ):
                    pos = full.index(anchor, pos + 1 if pos >= 0 else len(header))
                if anchor.startswith("\n"):
                    pos += 1
            l, c = line_col(full, pos)
            lines.append("# error: %s %d:%d\n" % (code, l, c))
        out = "".join(lines) + src
        assert len("".join(lines)) == len(header) or True
        with open(os.path.join(here, name + ".traj"), "w") as f:
            f.write(out)
    print(len(CASES), "fixtures")


if __name__ == "__main__":
    main()
