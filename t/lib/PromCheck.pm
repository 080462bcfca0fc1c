package PromCheck;

# Checks a status page in the Prometheus text format with the parser of the
# prometheus_client package (PyPI), through the documented
# add_response_body_check hook. A block opts in with
#
#   --- prometheus_samples
#   METRIC LABEL=VALUE ... VALUE
#
# (one expected sample a line); the last response of the block must parse and
# contain every listed sample.

use strict;
use warnings;

use File::Temp qw(tempfile);
use Test::More;
use Test::Nginx::Socket;

my $checker = <<'PY';
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1], encoding="utf-8").read()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = " ".join(f"{k}={v}" for k, v in sorted(s.labels.items(), key=lambda kv: kv[0] != "zone"))
        print(f"{s.name} {labels} {s.value:g}")
PY

sub check {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $expected = $block->prometheus_samples;
    return unless defined $expected;
    my $requests = $block->pipelined_requests // $block->request;
    my $count = ref $requests eq 'ARRAY' ? @$requests : 1;
    return if $req_idx != $count - 1;
    my $name = $block->name;
    SKIP: {
        skip "$name - prometheus_samples skipped: $dry_run", 1 if $dry_run;
        my ($fh, $file) = tempfile(UNLINK => 1);
        binmode $fh;
        print $fh $body;
        close $fh;
        my ($pyfh, $pyfile) = tempfile(SUFFIX => '.py', UNLINK => 1);
        print $pyfh $checker;
        close $pyfh;
        my $parsed = `python3 $pyfile $file 2>&1`;
        is($?, 0, "$name - prometheus_client parses the page") or diag $parsed;
        my %have = map { $_ => 1 } split /\n/, $parsed;
        for my $sample (grep { /\S/ } split /\n/, $expected) {
            $sample =~ s/^\s+|\s+$//g;
            ok($have{$sample}, "$name - sample \"$sample\"") or diag $parsed;
        }
    }
}

Test::Nginx::Socket::add_response_body_check(\&check);

1;
