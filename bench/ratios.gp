# The two ratios of every row of the report: childproc / raw baseline and childproc / Node,
# each oriented so that above 1 means childproc is better (log scale; NaN: no such peer).
set terminal pngcairo size 1100,600 font ",10" noenhanced
set output outfile
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set logscale y
set yrange [0.05:100]
set ylabel "childproc advantage, log scale (1 = same; > 1 = childproc better)"
set xtics rotate by -30 scale 0
# Room on the right for the last labels, which the rotation runs past the plot.
set rmargin 16
set grid ytics
set key top left
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
plot datafile using 2:xtic(1) title "vs raw POSIX baseline (C)", '' using 3 title "vs Node child_process"
