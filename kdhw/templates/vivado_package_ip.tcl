# kdhw: package a kdhw AXI4-Stream core as a Vivado IP with Vivado's own packager.
#
# `kdhw package RTL_DIR --board B --out DIR` writes this template, filled in, as DIR/package_ip.tcl (fields
# between @ signs are replaced by Tcl words).  DIR/ip/ already holds the sources and kdhw's own IP-XACT
# component.xml; this script lets Vivado rewrite ip/component.xml from the same sources (its checksums, its
# GUI file), declaring the interfaces that the wrapper's X_INTERFACE_INFO attributes name:
#
#   cd DIR && vivado -mode batch -source package_ip.tcl
#
# Then add DIR/ip to a project's IP repositories (bd_<board>.tcl does) and instantiate @VENDOR@:@LIBRARY@:@NAME@:@VERSION@.

set kdhw_part    @PART@
set kdhw_name    @NAME@
set kdhw_files   [list @FILES@]

set kdhw_here    [file dirname [file normalize [info script]]]
set kdhw_ip_dir  [file join $kdhw_here ip]
set kdhw_tmp     [file join $kdhw_here .kdhw_package_ip]

create_project kdhw_package_ip $kdhw_tmp -part $kdhw_part -force
foreach kdhw_f $kdhw_files {
    add_files -norecurse [file join $kdhw_ip_dir $kdhw_f]
}
set_property top $kdhw_name [current_fileset]
update_compile_order -fileset sources_1

ipx::package_project -root_dir $kdhw_ip_dir -vendor @VENDOR@ -library @LIBRARY@ -taxonomy /UserIP -force
set kdhw_core [ipx::current_core]
set_property name $kdhw_name $kdhw_core
set_property version @VERSION@ $kdhw_core
set_property display_name @DISPLAY@ $kdhw_core
set_property description @DISPLAY@ $kdhw_core
# the attributes already say this; associating again keeps the IP right if they were stripped
ipx::associate_bus_interfaces -busif s_axis -clock aclk $kdhw_core
ipx::associate_bus_interfaces -busif m_axis -clock aclk $kdhw_core
ipx::associate_bus_interfaces -clock aclk -reset aresetn $kdhw_core
set_property core_revision 1 $kdhw_core
ipx::create_xgui_files $kdhw_core
ipx::update_checksums $kdhw_core
ipx::check_integrity $kdhw_core
ipx::save_core $kdhw_core
close_project -delete
file delete -force $kdhw_tmp
puts "kdhw: packaged @VENDOR@:@LIBRARY@:@NAME@:@VERSION@ in $kdhw_ip_dir (part $kdhw_part)"
