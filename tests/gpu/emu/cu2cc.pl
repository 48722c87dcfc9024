#!/usr/bin/perl
# cu2cc.pl: turns a CUDA source into C++ for the CPU emulation of CUDA (tests/gpu/emu), by
# rewriting each kernel launch
#     name<<<grid, block[, smem[, stream]]>>>(args...)
#     name<template, args><<<...>>>(args...)
# into
#     ::emu::launch_of("name", name, ::emu::cfg(grid, block, smem, stream))(args...)
# Nothing else changes (line numbers included: a launch keeps its lines), so compiler messages
# point at the .cu file through the #line directive written first.
# Usage: cu2cc.pl IN.cu OUT.cc   (a launch this does not recognise stays and fails to compile)
use strict;
use warnings;

my ($in, $out) = @ARGV;
die "usage: cu2cc.pl IN.cu OUT.cc\n" unless defined $in && defined $out;
open(my $fh, '<', $in) or die "cu2cc.pl: cannot read $in: $!\n";
local $/;
my $src = <$fh>;
close($fh);

# kernel name: an identifier (possibly qualified) with optional template arguments that
# may nest one level (<a, b<c>>)
my $tmpl = qr/<(?:[^<>;{}]|<[^<>;{}]*>)*>/;
my $n = 0;
$src =~ s{(\b[A-Za-z_][\w:]*(?:\s*$tmpl)?)\s*<<<((?:(?!>>>)[^;{}])*)>>>\s*\(}{
        my ($k, $cfg) = ($1, $2);
        (my $name = $k) =~ s/\s+/ /g;
        $name =~ s/\\//g;
        $n++;
        "::emu::launch_of(\"$name\", $k, ::emu::cfg($cfg))(";
}gse;
die "cu2cc.pl: $in: a launch was not rewritten\n" if $src =~ /<<</;

(my $line = $in) =~ s/\\/\\\\/g;
$line =~ s/"/\\"/g;
open(my $oh, '>', "$out.tmp") or die "cu2cc.pl: cannot write $out.tmp: $!\n";
print $oh "#line 1 \"$line\"\n$src";
close($oh) or die "cu2cc.pl: cannot write $out.tmp: $!\n";
rename("$out.tmp", $out) or die "cu2cc.pl: cannot rename $out.tmp: $!\n";
