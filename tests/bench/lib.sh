# Shared by the side-by-side benchmarks (sourced, not run).

# min BEST VALUE: the smaller of the two (BEST may be empty).
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# alternate_sides N F1 F2 [F3 ...]: calls each function F with the run number
# I for I = 1..N, in the given order on odd runs and reversed on even runs
# (A B C, C B A, A B C, ...), so that no side always runs first or last (warm
# caches, a checkpoint in progress, a neighbour's load).
alternate_sides() {
    local n="$1" i j
    shift
    local sides=("$@")
    for i in $(seq 1 "$n"); do
        if [ $((i % 2)) = 1 ]; then
            for ((j = 0; j < ${#sides[@]}; j++)); do "${sides[j]}" "$i"; done
        else
            for ((j = ${#sides[@]} - 1; j >= 0; j--)); do "${sides[j]}" "$i"; done
        fi
    done
}

# alternate N: calls run_backstop I and run_baseline I for I = 1..N, in the
# order A B B A A B ... (alternate_sides with those two).
alternate() { alternate_sides "$1" run_backstop run_baseline; }
