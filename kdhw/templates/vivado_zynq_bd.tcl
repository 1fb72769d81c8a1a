# kdhw: Zynq block design for a kdhw AXI4-Stream core on @BOARD@, through the bitstream.
#
# `kdhw package RTL_DIR --board @BOARD@ --out DIR` writes this template, filled in, as DIR/bd_@BOARD@.tcl
# (fields between @ signs are replaced by Tcl words).  Run it where Vivado and the board's board files are:
#
#   cd DIR && vivado -mode batch -source bd_@BOARD@.tcl [-tclargs <jobs>]
#
# The design: processing system (board preset: DDR, MIO, clocks) -> AXI-Lite -> AXI DMA (simple mode, no
# scatter-gather); DMA MM2S -> core s_axis, core m_axis -> DMA S2MM; both DMA masters -> the PS's high-
# performance port to DDR.  One PL clock (@CLOCK_MHZ@ MHz) and its reset block drive everything.  It writes
#   bd_@BOARD@/                      the Vivado project
#   bd_@BOARD@/reports/              post-route utilization.rpt and timing_summary.rpt
#                                    (kdhw report RUN --board @BOARD@ --vendor-report <that>/utilization.rpt)
#   pynq/kdhw_overlay.bit, .hwh      what PYNQ's Overlay loads (pynq/kdhw_overlay.py drives it)

set kdhw_board      @BOARD@
set kdhw_part       @PART@
set kdhw_board_part @BOARD_PART@
set kdhw_vlnv       @VLNV@
set kdhw_jobs       4
if {[info exists argv] && [llength $argv] >= 1} {
    set kdhw_jobs [lindex $argv 0]
}

set kdhw_here    [file dirname [file normalize [info script]]]
set kdhw_prj_dir [file join $kdhw_here bd_$kdhw_board]
set kdhw_reports [file join $kdhw_prj_dir reports]
set kdhw_pynq    [file join $kdhw_here pynq]

proc kdhw_latest {vlnv} {
    # newest version of a Xilinx IP in this Vivado's catalog
    set defs [lsort -dictionary [get_ipdefs -all ${vlnv}:*]]
    if {[llength $defs] == 0} {
        error "kdhw: IP $vlnv is not in this Vivado's catalog"
    }
    return [lindex $defs end]
}

create_project kdhw_$kdhw_board $kdhw_prj_dir -part $kdhw_part -force
if {[llength [get_board_parts -quiet $kdhw_board_part]] == 0} {
    error "kdhw: board files for $kdhw_board_part are not installed; install them (Vivado board store, or the board vendor's board files) and run again"
}
set_property board_part $kdhw_board_part [current_project]
set_property ip_repo_paths [list [file join $kdhw_here ip]] [current_project]
update_ip_catalog
if {[llength [get_ipdefs -all $kdhw_vlnv]] == 0} {
    error "kdhw: IP $kdhw_vlnv not found in [file join $kdhw_here ip]; run package_ip.tcl, or check ip/component.xml"
}

create_bd_design kdhw_bd

# processing system with the board's preset, one PL clock, a master port for control and a slave port to DDR
create_bd_cell -type ip -vlnv [kdhw_latest @PS_VLNV@] ps
apply_bd_automation -rule @PS_RULE@ -config @PS_RULE_CONFIG@ [get_bd_cells ps]
set_property -dict [list @PS_CONFIG@] [get_bd_cells ps]

# AXI DMA, simple mode; stream widths are the core's DMA-side widths
create_bd_cell -type ip -vlnv [kdhw_latest xilinx.com:ip:axi_dma] axi_dma
set_property -dict [list @DMA_CONFIG@] [get_bd_cells axi_dma]

# the kdhw core
create_bd_cell -type ip -vlnv $kdhw_vlnv kdhw_core
connect_bd_intf_net [get_bd_intf_pins axi_dma/M_AXIS_MM2S] [get_bd_intf_pins kdhw_core/s_axis]
connect_bd_intf_net [get_bd_intf_pins kdhw_core/m_axis] [get_bd_intf_pins axi_dma/S_AXIS_S2MM]

# memory-mapped connections: PS -> DMA registers; DMA -> DDR through the PS slave port.  The automation adds
# the interconnects and a reset block for the PL clock and connects their clocks and resets.
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} Master /ps/@PS_MASTER@ Slave {/axi_dma/S_AXI_LITE} ddr_seg {Auto} intc_ip {New AXI Interconnect} master_apm {0}] [get_bd_intf_pins axi_dma/S_AXI_LITE]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} Master {/axi_dma/M_AXI_MM2S} Slave /ps/@PS_SLAVE@ ddr_seg {Auto} intc_ip {New AXI Interconnect} master_apm {0}] [get_bd_intf_pins ps/@PS_SLAVE@]
apply_bd_automation -rule xilinx.com:bd_rule:axi4 -config [list Clk_master {Auto} Clk_slave {Auto} Clk_xbar {Auto} Master {/axi_dma/M_AXI_S2MM} Slave /ps/@PS_SLAVE@ ddr_seg {Auto} intc_ip {Auto} master_apm {0}] [get_bd_intf_pins axi_dma/M_AXI_S2MM]

# the core's clock and reset: the PL clock and the peripheral reset of the reset block on that clock
connect_bd_net [get_bd_pins ps/@PS_CLK@] [get_bd_pins kdhw_core/aclk]
set kdhw_rst [lindex [get_bd_cells -filter {VLNV =~ "xilinx.com:ip:proc_sys_reset:*"}] 0]
if {$kdhw_rst eq ""} {
    error "kdhw: no proc_sys_reset block after the AXI automation; connect kdhw_core/aresetn by hand"
}
connect_bd_net [get_bd_pins $kdhw_rst/peripheral_aresetn] [get_bd_pins kdhw_core/aresetn]

# address map: every segment the masters reach (the DMA registers for the PS, DDR for the DMA)
assign_bd_address
validate_bd_design
save_bd_design

set kdhw_bd_file [get_files kdhw_bd.bd]
generate_target all $kdhw_bd_file
add_files -norecurse [make_wrapper -files $kdhw_bd_file -top]
set_property top kdhw_bd_wrapper [current_fileset]
update_compile_order -fileset sources_1

launch_runs impl_1 -to_step write_bitstream -jobs $kdhw_jobs
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {
    error "kdhw: implementation did not finish; see [get_property DIRECTORY [get_runs impl_1]]/runme.log"
}

# post-route reports, in the format kdhw report --vendor-report reads
open_run impl_1
file mkdir $kdhw_reports
report_utilization -file [file join $kdhw_reports utilization.rpt]
report_timing_summary -file [file join $kdhw_reports timing_summary.rpt]

# the bitstream and its hardware handoff, under one name, where PYNQ's Overlay looks for them
set kdhw_bit [glob -nocomplain [file join [get_property DIRECTORY [get_runs impl_1]] kdhw_bd_wrapper.bit]]
set kdhw_hwh [glob -nocomplain [file join $kdhw_prj_dir *.gen sources_1 bd kdhw_bd hw_handoff kdhw_bd.hwh] \
                               [file join $kdhw_prj_dir *.srcs sources_1 bd kdhw_bd hw_handoff kdhw_bd.hwh]]
if {[llength $kdhw_bit] == 0 || [llength $kdhw_hwh] == 0} {
    error "kdhw: bitstream or hardware handoff (.hwh) not found under $kdhw_prj_dir"
}
file mkdir $kdhw_pynq
file copy -force [lindex $kdhw_bit 0] [file join $kdhw_pynq kdhw_overlay.bit]
file copy -force [lindex $kdhw_hwh 0] [file join $kdhw_pynq kdhw_overlay.hwh]
puts "kdhw: $kdhw_pynq/kdhw_overlay.bit and .hwh written (part $kdhw_part); copy pynq/ to the board"
