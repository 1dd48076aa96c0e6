# Seed 004's memory table, measured: the sum of the PSS of n idle workers, childproc's C++
# workers against Node's fork, and the seed's "~25MB each" (log-log; NaN: not run).
set terminal pngcairo size 900,560 font ",10" noenhanced
set output outfile
set logscale xy
set xrange [0.7:1500]
set xlabel "idle workers"
set ylabel "memory of all workers, MB (sum of PSS), log scale"
set grid
set key top left
plot datafile using 1:2 with linespoints lw 2 pt 7 title "childproc C++ workers", \
     '' using 1:3 with linespoints lw 2 pt 5 title "Node child_process.fork", \
     '' using 1:4 with lines dt 2 lw 2 title "seed 004's figure (~25 MB each)"
