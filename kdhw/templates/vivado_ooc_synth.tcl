# kdhw: out-of-context Vivado synthesis, placement and routing of a kdhw RTL folder for one board's part.
#
# `kdhw report DIR --board B` writes this template, filled in, as DIR/hw_vivado_<B>.tcl for every Xilinx
# board (fields between @ signs are replaced by Tcl words, quoted so that no file name can inject a
# command; everything else is copied as is).  Run it where Vivado is installed, then feed the reports it
# writes back to kdhw:
#
#   vivado -mode batch -source hw_vivado_<B>.tcl [-tclargs <other part>]
#   kdhw report DIR --board <B> --vendor-report DIR/vivado_<B>
#
# Why out of context: the student is a core without I/O buffers; a full implementation of its wide
# parallel ports would fail on pins long before logic.  The design is still optimized, placed and routed
# (its ports stay unplaced), so the reports kdhw reads are post-route: utilization.rpt counts the routed
# netlist and timing_summary.rpt's WNS includes routing delays; with the board's clock as the constraint,
# kdhw computes the achieved fmax as 1000 / (period - WNS).  utilization_synth.rpt keeps the post-synthesis
# count for comparison.

set kdhw_top      @TOP@
set kdhw_part     @PART@
set kdhw_clock_ns @CLOCK_NS@
set kdhw_files    [list @FILES@]

set kdhw_here     [file dirname [file normalize [info script]]]
set kdhw_rtl_dir  [file join $kdhw_here @RTL_DIR@]
set kdhw_out_dir  [file join $kdhw_here @OUT_DIR@]
if {[info exists argv] && [llength $argv] >= 1} {
    set kdhw_part [lindex $argv 0]
}

file mkdir $kdhw_out_dir
foreach kdhw_f $kdhw_files {
    read_verilog [file join $kdhw_rtl_dir $kdhw_f]
}
synth_design -top $kdhw_top -part $kdhw_part -mode out_of_context
create_clock -name clk -period $kdhw_clock_ns [get_ports clk]
report_utilization -file [file join $kdhw_out_dir utilization_synth.rpt]
opt_design
place_design
route_design
report_utilization -file [file join $kdhw_out_dir utilization.rpt]
report_timing_summary -file [file join $kdhw_out_dir timing_summary.rpt]
puts "kdhw: post-route reports in $kdhw_out_dir (part $kdhw_part, top $kdhw_top, clock $kdhw_clock_ns ns)"
