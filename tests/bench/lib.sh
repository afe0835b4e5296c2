# Shared by the side-by-side benchmarks (sourced, not run).

# min BEST VALUE: the smaller of the two (BEST may be empty).
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc -l)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

# alternate N: calls run_backstop I and run_baseline I for I = 1..N, in the
# order A B B A A B ..., so that neither side always runs first (warm caches,
# a checkpoint in progress, a neighbour's load).
alternate() {
    local i
    for i in $(seq 1 "$1"); do
        if [ $((i % 2)) = 1 ]; then
            run_backstop "$i"
            run_baseline "$i"
        else
            run_baseline "$i"
            run_backstop "$i"
        fi
    done
}
