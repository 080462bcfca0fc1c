# Self-test of the Test::Nginx runner's modes, set by the environment as for
# the real Test::Nginx: TEST_NGINX_USE_HUP=1 (nginx reloaded between blocks)
# and TEST_NGINX_USE_VALGRIND=1 (nginx in the foreground under valgrind's
# memcheck, with ./valgrind.suppress, its reports on stderr after the block's
# name).
#
# Runs the Test::Nginx file below in a child perl, in a directory of its own,
# once per mode, and checks its TAP output and its stderr.  Uses whichever
# Test::Nginx::Socket this prove run uses.  The file checks, from its own
# blocks, whether the master was reloaded or restarted and what runs it.
use strict;
use warnings;

use File::Copy qw(copy);
use File::Spec;
use File::Temp qw(tempdir);
use FindBin ();
use Test::More;

my ($lib) = grep { !ref && -f "$_/Test/Nginx/Socket.pm" } @INC;
plan skip_all => 'Test::Nginx::Socket not found' unless $lib;
$lib = File::Spec->rel2abs($lib);
# The fallback fails a block with valgrind reports; the real one only prints them.
my $fallback = $lib =~ m{/t/lib/fallback$};
my $suppress = File::Spec->rel2abs("$FindBin::Bin/../../valgrind.suppress");
my $have_valgrind = !system('valgrind --version >/dev/null 2>&1');

my $child = do { local $/; <DATA> };

# Runs the child with these environment settings; with $supp, a copy of the
# repository's valgrind.suppress sits in its directory.  Returns its exit
# status, stdout and stderr.
sub run_child {
    my ($env, $supp) = @_;
    my $dir = tempdir(CLEANUP => 1);
    mkdir "$dir/t" or die "mkdir: $!";
    open my $fh, '>', "$dir/t/modes.t" or die "open: $!";
    print $fh $child;
    close $fh;
    copy($suppress, "$dir/valgrind.suppress") or die "copy $suppress: $!" if $supp;
    local %ENV = (%ENV, TEST_NGINX_SERVROOT => "$dir/t/servroot", %$env);
    delete $ENV{$_} for grep { !defined $ENV{$_} } keys %ENV;
    my $out = `cd '$dir' && '$^X' -I'$lib' t/modes.t 2>'$dir/stderr'`;
    my $status = $? >> 8;
    my $err = do { local (@ARGV, $/) = "$dir/stderr"; <> } // '';
    return ($status, $out, $err);
}

# The child's subtests: each "ok"/"not ok" line, by description.
sub results {
    my $out = shift;
    my %r;
    while ($out =~ /^(ok|not ok) \d+ - (.*)$/mg) {
        $r{$2} = $1 eq 'ok';
    }
    return \%r;
}

sub all_ok {
    my ($r, $what) = @_;
    my @bad = grep { !$r->{$_} } sort keys %$r;
    ok(keys(%$r) >= 10 && !@bad, "$what: every subtest passes")
        or diag join "\n", "failed:", @bad;
}

my %unset = (TEST_NGINX_USE_HUP => undef, TEST_NGINX_USE_VALGRIND => undef);

{
    my ($status, $out, $err) = run_child({ %unset });
    is($status, 0, 'default mode: the child passes') or diag $out, $err;
    all_ok(results($out), 'default mode');
    like($out, qr/^ok \d+ - mode: restarted between blocks$/m, 'default mode: nginx restarted');
}

{
    my ($status, $out, $err) = run_child({ %unset, TEST_NGINX_USE_HUP => 1 });
    is($status, 0, 'TEST_NGINX_USE_HUP=1: the child passes') or diag $out, $err;
    all_ok(results($out), 'TEST_NGINX_USE_HUP=1');
    like($out, qr/^ok \d+ - mode: reloaded between blocks$/m, 'TEST_NGINX_USE_HUP=1: nginx reloaded');
}

SKIP: {
    skip 'valgrind is not installed', 11 unless $have_valgrind;
    my %vg = (%unset, TEST_NGINX_USE_VALGRIND => 1,
              TEST_NGINX_SLEEP => 0.1, TEST_NGINX_TIMEOUT => 30);

    # No valgrind.suppress: nginx's own leaks at a worker's exit are reported.
    my ($status, $out, $err) = run_child({ %vg });
    my $r = results($out);
    like($out, qr/^ok \d+ - mode: under valgrind$/m, 'valgrind mode: nginx runs under valgrind');
    # the block name last written before valgrind's first report
    my ($before) = $err =~ /\A(.*?)^==\d+== \S.* definitely lost /ms;
    my @names = ($before // '') =~ /^(t\/modes\.t TEST \d+: \w+)$/mg;
    is($names[-1], 't/modes.t TEST 1: first',
       "valgrind mode: reports on stderr after the block's name") or diag $err;
    like($err, qr/^\{\n   <insert_a_suppression_name_here>\n   Memcheck:Leak\n/m,
         'valgrind mode: with suppressions to copy');
    my @vg_failed = grep { /valgrind reported/ } keys %$r;
    my @other = grep { !/valgrind reported/ } keys %$r;
    is(scalar(grep { !$r->{$_} } @other), 0, 'valgrind mode: every other subtest passes')
        or diag $out;
    if ($fallback) {
        is(join(',', sort map { /TEST (\d+)/ } @vg_failed), '1,2,4',
           'valgrind mode: a block with reports fails (the fallback runner)') or diag $out;
        isnt($status, 0, 'valgrind mode: so does the file');
    } else {
        is(scalar(@vg_failed), 0, 'valgrind mode: the real runner only prints the reports');
        is($status, 0, 'valgrind mode: and passes');
    }

    # valgrind.suppress in the current directory silences them; HUP mode
    # reloads nginx under valgrind.
    ($status, $out, $err) = run_child({ %vg, TEST_NGINX_USE_HUP => 1 }, 1);
    is($status, 0, 'valgrind + HUP mode, valgrind.suppress: the child passes') or diag $out, $err;
    all_ok(results($out), 'valgrind + HUP mode');
    like($out, qr/^ok \d+ - mode: reloaded between blocks$/m, 'valgrind + HUP mode: nginx reloaded');
    like($out, qr/^ok \d+ - mode: under valgrind$/m, 'valgrind + HUP mode: under valgrind');
    unlike($err, qr/^==\d+== /m, 'valgrind.suppress is read: no report') or diag $err;
}

done_testing();

__DATA__
use Test::Nginx::Socket 'no_plan';

my $valgrind = $ENV{TEST_NGINX_USE_VALGRIND};

# The master's pid and executable while each block's requests ran.
my (%master, %exe);
add_response_body_check(sub {
    my ($block) = @_;
    my ($n) = $block->name =~ /TEST (\d+):/;
    open my $in, '<', $Test::Nginx::Util::PidFile or return;
    chomp(my $pid = <$in> // '');
    $master{$n} = $pid;
    $exe{$n} = readlink("/proc/$pid/exe") // '';
});

workers(1);
master_on();
no_shuffle();
run_tests();

if ($ENV{TEST_NGINX_USE_HUP}) {
    is($master{2}, $master{1}, "mode: reloaded between blocks");
} else {
    isnt($master{2}, $master{1}, "mode: restarted between blocks");
}
isnt($master{4}, $master{1}, "a new master after the must_die block");
ok(!kill(0, $master{1}), "the first master was stopped");
if ($valgrind) {
    like($exe{1}, qr/memcheck/, "mode: under valgrind");
} else {
    like($exe{1}, qr/nginx$/, "mode: nginx by itself");
}

__DATA__

=== TEST 1: first
--- config
    location = /t { return 200 "one\n"; }
--- init
my $conf = do { local (@ARGV, $/) = $Test::Nginx::Util::ConfFile; <> };
Test::More::like($conf, $ENV{TEST_NGINX_USE_VALGRIND} ? qr/^daemon off;$/m : qr/^daemon on;$/m,
                 "daemon off under valgrind only");
Test::More::like($conf, qr/^master_process on;$/m, "master_on() holds in every mode");
--- request
GET /t
--- response_body
one



=== TEST 2: second
--- config
    location = /t { return 200 "two\n"; }
--- request
GET /t
--- response_body
two



=== TEST 3: must_die runs nginx by itself in every mode
--- config
    bogus_directive_in_modes on;
--- must_die
--- suppress_stderr
--- error_log
unknown directive "bogus_directive_in_modes"



=== TEST 4: and the next block starts nginx again
--- config
    location = /t { return 200 "four\n"; }
--- request
GET /t
--- response_body
four
