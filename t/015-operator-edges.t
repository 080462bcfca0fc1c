# What an operator can do to a zone that the other files leave alone: a
# relative state= path, a state directory nginx cannot write, start=
# changed on a reload and on a restart, idle keys of a durable zone across
# a clean stop and a crash, and the full-zone log line (its rate and
# ticket_log_level).
#
# As in t/009-durable.t, use_hup() makes a --- must_die block the only way
# nginx stops, in every mode: the block before it ran on a reloaded nginx,
# the block after it on a fresh start (checked by the durable zones'
# "counters restored from" notice). Each must_die block checks a
# configuration error of its own. TEST 15 stops nginx the other way: it
# kills every nginx process with SIGKILL (--- crash), as a power cut would.
# Zones are named after the block that first declares them (e1, e7d, ...);
# a later block names the same zone only to see what it kept.
use lib 't/lib';
use File::Spec;
use File::Temp qw(tempdir);
use POSIX ();
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(sleep time);
use Steps;

# Outside the server root, which the runner wipes between blocks.
my $dir = $ENV{TEST_NGINX_STATE_DIR} = tempdir('ngx-ticket-edges-XXXXXX', TMPDIR => 1, CLEANUP => 1);
# The same directory as a path relative to nginx's prefix (-p, the server
# root), which is neither the current directory nor the configuration's.
$ENV{TEST_NGINX_REL_STATE_DIR} = File::Spec->abs2rel($dir, $ENV{TEST_NGINX_SERVER_ROOT});
die "not relative: $ENV{TEST_NGINX_REL_STATE_DIR}" if $ENV{TEST_NGINX_REL_STATE_DIR} =~ m{^/};

# A regular file where a state directory's parent should be.
open my $fh, '>', "$dir/afile" or die $!;
close $fh;

# `nginx -t` on a configuration of our own (its own prefix, never started):
# returns its exit status and output.
sub nginx_t {
    my ($http, %opt) = @_;
    my $prefix = tempdir('ngx-ticket-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    mkdir "$prefix/logs";
    my $load = join '', map { "load_module $_;\n" } split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '';
    my $user = $opt{user} // ($> == 0 ? 'root' : undef);
    open my $out, '>', "$prefix/nginx.conf" or die $!;
    print $out $load, "error_log logs/error.log;\npid logs/nginx.pid;\n",
        (defined $user ? "user $user;\n" : ''),
        "events {}\nhttp {\n    $http\n    server {\n        listen 127.0.0.1:1;\n",
        "        location / { return 204; }\n    }\n}\n";
    close $out;
    my $bin = $ENV{TEST_NGINX_BINARY} // 'nginx';
    my $got = `'$bin' -t -p '$prefix/' -c '$prefix/nginx.conf' 2>&1`;
    return ($? >> 8, $got);
}

# --- check: Perl run after the block's last response (and its steps).
# --- crash: SIGKILL to the master and every worker at once, then nothing
# is left: the next block starts nginx afresh from the state file.
my $pid_file = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid";
Test::Nginx::Socket::add_response_body_check(sub {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $requests = $block->pipelined_requests // $block->request;
    return if $req_idx != (ref $requests eq 'ARRAY' ? @$requests : 1) - 1;
    return if $dry_run;
    if (defined(my $code = $block->check)) {
        eval $code;
        die $block->name . ": --- check: $@" if $@;
    }
    if (defined $block->crash) {
        open my $in, '<', $pid_file or die "no pid file: $!";
        chomp(my $master = <$in> // '');
        close $in;
        die "bad pid \"$master\"" unless $master =~ /^\d+$/;
        my @workers = grep { /^\d+$/ } map { chomp; $_ } `pgrep -P $master`;
        kill 'KILL', $master, @workers;
        my $deadline = time + 30;
        while (time < $deadline) {
            waitpid $master, POSIX::WNOHANG();    # ours under valgrind
            last unless grep { kill 0, $_ } $master, @workers;
            sleep 0.05;
        }
        Test::More::ok(!(grep { kill 0, $_ } $master, @workers), $block->name . " - nginx killed");
        unlink $pid_file;
    }
});

# The error log lines naming a zone (the zones are the block's own).
sub zone_lines {
    my ($zone, $what) = @_;
    my $log = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log";
    open my $in, '<', $log or die "$log: $!";
    my @lines = grep { /ticket zone "\Q$zone\E" \Q$what\E/ } <$in>;
    close $in;
    return @lines;
}

use_hup();
check_accum_error_log();
workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a relative state= path is relative to the nginx prefix (not the current or the conf directory)
--- http_config
    ticket_zone e1:32k state=html/e1.state;
--- config
    location = /t { ticket_counter zone=e1; }
--- request
GET /t
--- response_body
1
--- error_log eval
qr/ticket zone "e1": state file "\Q$ENV{TEST_NGINX_SERVER_ROOT}\E\/html\/e1\.state" not found, counters start fresh/
--- check
my $root = $ENV{TEST_NGINX_SERVER_ROOT};
Test::More::ok(-f "$root/html/e1.state", "TEST 1 - the state file is under the prefix");
Test::More::ok(!-e "$root/conf/html/e1.state" && !-e "html/e1.state",
               "TEST 1 - and not under the conf directory or the current one");



=== TEST 2: a relative path may leave the prefix (../): a durable zone there
--- http_config
    ticket_zone e2:32k state=$TEST_NGINX_REL_STATE_DIR/e2.state reserve=5;
--- config
    location = /t { ticket_counter zone=e2; }
    location = /k { ticket_counter zone=e2 key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /t", "GET /k?k=a"]
--- response_body eval
["1\n", "2\n", "1\n"]
--- error_log eval
qr/ticket zone "e2": state file "\S+\/\.\.\/\S+\/e2\.state" not found, counters start fresh/
--- check
Test::More::ok(-f "$ENV{TEST_NGINX_STATE_DIR}/e2.state", "TEST 2 - the state file is in the state directory");



=== TEST 3: one file by a relative and by an absolute path is still one file (stops nginx cleanly)
--- http_config
    ticket_zone e3a:32k state=$TEST_NGINX_REL_STATE_DIR/e3.state;
    ticket_zone e3b:32k state=$TEST_NGINX_STATE_DIR/e3.state;
--- config
    location = /t { ticket_counter zone=e3a; }
    location = /u { ticket_counter zone=e3b; }
--- request
GET /t
--- must_die
--- error_log eval
qr/\[emerg\] .*ticket zones "e3a" and "e3b" use the same state file "\S+\/e3\.state"/



=== TEST 4: after the stop, the zone with the relative path resumes with no gap
--- http_config
    ticket_zone e2:32k state=$TEST_NGINX_REL_STATE_DIR/e2.state reserve=5;
--- config
    location = /t { ticket_counter zone=e2; }
    location = /k { ticket_counter zone=e2 key=$arg_k; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", ("GET /t") x 6]
--- response_body eval
["3\n", "2\n", map { "$_\n" } 4 .. 9]
--- error_log eval
qr/ticket zone "e2": 2 counters restored from "\S+\/\.\.\/\S+\/e2\.state"/



=== TEST 5: a state directory whose parent is a regular file stops the start, naming zone and path
--- http_config
    ticket_zone e5:32k state=$TEST_NGINX_STATE_DIR/afile/e5.state;
--- config
    location = /t { ticket_counter zone=e5; }
--- request
GET /t
--- must_die
--- error_log eval
qr/\[emerg\] .*ticket zone "e5": "\S+\/afile" is not a directory/



=== TEST 6: a directory where no file can be created (/proc, even for root) stops the start
--- http_config
    ticket_zone e6:32k state=/proc/ngx-ticket-e6.state;
--- config
    location = /t { ticket_counter zone=e6; }
--- request
GET /t
--- must_die
--- error_log eval
qr/\[emerg\] .*ticket zone "e6": (?:open\(\) "\/proc\/\.ngx-ticket-e6\.state\.[0-9a-f]{16}\.tmp" failed: No such file or directory|directory "\/proc" does not let uid \d+ create and rename files)/



=== TEST 7: nginx -t fails where the start would, with the same message; and for a worker user the mode bits keep out
--- http_config
    ticket_zone e7:32k;
    ticket_zone e7d:32k state=$TEST_NGINX_STATE_DIR/e7d.state;
--- config
    location = /t { ticket_counter zone=e7 start=10; }
    location = /k { ticket_counter zone=e7 key=$arg_k start=10; }
    location = /d { ticket_counter zone=e7d start=10; }
    location = /dk { ticket_counter zone=e7d key=$arg_k start=10; }
--- init
my $d = $ENV{TEST_NGINX_STATE_DIR};
my ($rc, $out) = main::nginx_t("ticket_zone x:32k state=$d/afile/x.state;");
Test::More::isnt($rc, 0, "TEST 7 - nginx -t fails: parent is a file");
Test::More::like($out, qr/\[emerg\] ticket zone "x": "\Q$d\E\/afile" is not a directory/, "TEST 7 - names it");
($rc, $out) = main::nginx_t("ticket_zone x:32k state=$d/afile/sub/x.state;");
Test::More::isnt($rc, 0, "TEST 7 - nginx -t fails: a file on the way");
Test::More::like($out, qr/ticket zone "x": "\Q$d\E\/afile\/sub" is not a directory/, "TEST 7 - names it");
($rc, $out) = main::nginx_t("ticket_zone x:32k state=/proc/x.state;");
Test::More::isnt($rc, 0, "TEST 7 - nginx -t fails: /proc");
Test::More::like($out, qr/\[emerg\] ticket zone "x": (?:open\(\) "\/proc\/\.x\.state\.[0-9a-f]{16}\.tmp" failed|directory "\/proc" does not let uid)/,
                 "TEST 7 - names it");
($rc, $out) = main::nginx_t("ticket_zone x:32k state=$d/x.state;");
Test::More::is($rc, 0, "TEST 7 - nginx -t passes on a good directory") or Test::More::diag($out);
Test::More::ok(!-e "$d/x.state" && !grep(/^\.x\.state\./, do { opendir(my $dh, $d) or die $!; readdir $dh }),
               "TEST 7 - and leaves nothing in it");
if ($> == 0) {
    mkdir "$d/rootonly";
    chmod 0755, "$d/rootonly";
    ($rc, $out) = main::nginx_t("ticket_zone x:32k state=$d/rootonly/x.state;", 
                                 user => 'nobody ' . (getgrnam('nogroup') ? 'nogroup' : 'nobody'));
    Test::More::isnt($rc, 0, "TEST 7 - nginx -t fails: a directory the worker user cannot write");
    Test::More::like($out, qr/ticket zone "x": directory "\Q$d\E\/rootonly" does not let uid \d+ create and rename files/,
                     "TEST 7 - names it");
}
--- pipelined_requests eval
["GET /t", "GET /t", "GET /k?k=a", "GET /d", "GET /d", "GET /dk?k=a"]
--- response_body eval
["10\n", "11\n", "10\n", "10\n", "11\n", "10\n"]



=== TEST 8: start= changed on a reload: running counters go on, only new keys take the new start
--- http_config
    ticket_zone e7:32k;
    ticket_zone e7d:32k state=$TEST_NGINX_STATE_DIR/e7d.state;
--- config
    location = /t { ticket_counter zone=e7 start=100; }
    location = /k { ticket_counter zone=e7 key=$arg_k start=100; }
    location = /d { ticket_counter zone=e7d start=100; }
    location = /dk { ticket_counter zone=e7d key=$arg_k start=100; }
    location = /admin { ticket_admin zone=e7d; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", "GET /k?k=b", "GET /d", "GET /dk?k=a", "GET /dk?k=b", "GET /admin?key=a"]
--- response_body_like eval
[qr/^12\n\z/, qr/^11\n\z/, qr/^100\n\z/, qr/^12\n\z/, qr/^11\n\z/, qr/^100\n\z/,
 qr/^\{"key":"a","start":10,"issued":2,"last":11,"next":12,/]
--- no_error_log eval
qr/ticket zone "e7d": \d+ counters restored from/



=== TEST 9: a lower start= with a resize on a reload: carried over, nothing moves back
--- http_config
    ticket_zone e7:64k;
    ticket_zone e7d:32k state=$TEST_NGINX_STATE_DIR/e7d.state;
--- config
    location = /t { ticket_counter zone=e7 start=5; }
    location = /k { ticket_counter zone=e7 key=$arg_k start=5; }
    location = /d { ticket_counter zone=e7d start=5; }
    location = /dk { ticket_counter zone=e7d key=$arg_k start=5; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", "GET /k?k=b", "GET /k?k=c", "GET /d", "GET /dk?k=a", "GET /dk?k=c"]
--- response_body eval
["13\n", "12\n", "101\n", "5\n", "13\n", "12\n", "5\n"]
--- error_log
ticket zone "e7" resized: 3 counters carried over



=== TEST 10: a bad ticket_log_level stops nginx (cleanly stopping the one before)
--- config
    ticket_log_level loud;
    location = /t { return 204; }
--- request
GET /t
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid value "loud" in "ticket_log_level" directive in \S+:\d+/



=== TEST 11: start= changed across a restart: a durable zone keeps its counters and their start, a plain one starts at the new one
--- http_config
    ticket_zone e7:64k;
    ticket_zone e7d:32k state=$TEST_NGINX_STATE_DIR/e7d.state;
--- config
    location = /t { ticket_counter zone=e7 start=1000; }
    location = /k { ticket_counter zone=e7 key=$arg_k start=1000; }
    location = /d { ticket_counter zone=e7d start=1000; }
    location = /dk { ticket_counter zone=e7d key=$arg_k start=1000; }
    location = /admin { ticket_admin zone=e7d; }
--- pipelined_requests eval
["GET /t", "GET /k?k=a", "GET /d", "GET /dk?k=a", "GET /dk?k=b", "GET /dk?k=c", "GET /dk?k=new", "GET /admin?key=a"]
--- response_body_like eval
[qr/^1000\n\z/, qr/^1000\n\z/, qr/^14\n\z/, qr/^13\n\z/, qr/^101\n\z/, qr/^6\n\z/, qr/^1000\n\z/,
 qr/^\{"key":"a","start":10,"issued":4,"last":13,"next":14,/]
--- error_log eval
qr/ticket zone "e7d": 4 counters restored from/



=== TEST 12: idle keys of durable zones: one idle long enough is swept before the stop, one in use is not
--- http_config
    ticket_zone e12:32k state=$TEST_NGINX_STATE_DIR/e12.state idle=2s;
    ticket_zone e12l:32k state=$TEST_NGINX_STATE_DIR/e12l.state idle=30s;
--- config
    location = /g { ticket_counter zone=e12 key=$arg_k; }
    location = /gs { ticket_status zone=e12; }
    location = /l { ticket_counter zone=e12l key=$arg_k; }
--- pipelined_requests eval
["GET /g?k=gone", "GET /g?k=gone", "GET /l?k=live", "GET /l?k=live"]
--- response_body eval
["1\n", "2\n", "1\n", "2\n"]
--- steps
# idle for 2s, swept within the sweeper's 1s round (and the retirement written)
sleep 4
GET /gs => 200 /"expired":1,"keys":0,/



=== TEST 13: ticket_log_level twice stops nginx (cleanly stopping the one before)
--- config
    location = /t { ticket_log_level warn; ticket_log_level notice; return 204; }
--- request
GET /t
--- must_die
--- error_log eval
qr/\[emerg\] .*"ticket_log_level" directive is duplicate in \S+:\d+/



=== TEST 14: after a clean stop: the swept key stays retired, the key in use goes on
--- http_config
    ticket_zone e12:32k state=$TEST_NGINX_STATE_DIR/e12.state idle=2s;
    ticket_zone e12l:32k state=$TEST_NGINX_STATE_DIR/e12l.state idle=30s;
--- config
    location = /g { ticket_counter zone=e12 key=$arg_k; }
    location = /gpub { ticket_counter zone=e12 key=$arg_k create=off; }
    location = /l { ticket_counter zone=e12l key=$arg_k; }
--- pipelined_requests eval
["GET /gpub?k=gone", "GET /g?k=gone", "GET /l?k=live"]
--- error_code eval
[404, 200, 200]
--- response_body eval
["no such counter\n", "1\n", "3\n"]
--- error_log eval
qr/ticket zone "e12l": 2 counters restored from/



=== TEST 15: a key in use, whose last reservation is older than idle=, then every nginx process killed
--- http_config
    ticket_zone e15:32k state=$TEST_NGINX_STATE_DIR/e15.state reserve=1000 idle=8s;
--- config
    location = /c { ticket_counter zone=e15 key=$arg_k; }
--- request
GET /c?k=live
--- response_body
1
--- steps
# used every 4.5s: never idle for 8s; its only reservation (and the used
# time the file holds) is from the first request, 9s before the crash
sleep 4.5
GET /c?k=live => 200 "2\n"
sleep 4.5
GET /c?k=live => 200 "3\n"
--- crash



=== TEST 16: after the crash the key goes on past its reservation, not afresh at 1
--- http_config
    ticket_zone e15:32k state=$TEST_NGINX_STATE_DIR/e15.state reserve=1000 idle=8s;
--- config
    location = /c { ticket_counter zone=e15 key=$arg_k; }
    location = /admin { ticket_admin zone=e15; }
--- pipelined_requests eval
["GET /admin?key=live", "GET /c?k=live"]
--- response_body_like eval
[qr/^\{"key":"live","start":1,"issued":1000,/, qr/^1001\n\z/]
--- error_log eval
qr/ticket zone "e15": 2 counters restored from/



=== TEST 17: a full zone refuses new keys with 503 and logs it at most once a second per worker, not once a request
--- http_config
    ticket_zone f17:32k;
--- config
    location = /k { ticket_counter zone=f17 key=$arg_k; }
--- pipelined_requests eval
[(map { "GET /k?k=fill$_" } 1 .. 117), (map { "GET /k?k=more$_" } 1 .. 60), "GET /k?k=fill1"]
--- error_code eval
[(200) x 117, (503) x 60, 200]
--- response_body eval
[("1\n") x 117, ("ticket zone full\n") x 60, "2\n"]
--- error_log eval
qr/\[error\] .*ticket zone "f17" is full \(117 keys\), new keys refused/
--- steps
sleep 1.1
GET /k?k=after => 503 "ticket zone full\n"
GET /k?k=fill2 => 200 "2\n"
--- check
my @lines = main::zone_lines('f17', 'is full');
my %seen;
my @twice = grep { /^(\S+ \S+) \[\w+\] (\d+)#/ && $seen{"$1 $2"}++ } @lines;
Test::More::ok(@lines >= 2 && @lines < 61, "TEST 17 - a few lines for 61 refusals: " . scalar @lines);
Test::More::is(scalar @twice, 0, "TEST 17 - never two in one second from one worker") or Test::More::diag(@lines);



=== TEST 18: ticket_log_level: inherited from http, set per location, also for a variable's refusal
--- http_config
    ticket_zone f18:32k;
    ticket_log_level warn;
    ticket_variable $f18 zone=f18 key=$arg_k;
--- config
    location = /k { ticket_counter zone=f18 key=$arg_k; }
    location = /n { ticket_log_level notice; ticket_counter zone=f18 key=$arg_k; }
    location = /v { ticket_log_level info; add_header X-Ticket $f18; return 204; }
--- pipelined_requests eval
[(map { "GET /k?k=fill$_" } 1 .. 117)]
--- response_body eval
[("1\n") x 117]
--- steps
# a second apart, so that the once-a-second limit lets each through
GET /k?k=new1 => 503 "ticket zone full\n"
sleep 1.1
GET /n?k=new2 => 503 "ticket zone full\n"
sleep 1.1
GET /v?k=new3 => 204
GET /v?k=fill1 => 204
--- check
my @lines = main::zone_lines('f18', 'is full');
for my $level (qw(warn notice info)) {
    Test::More::is(scalar(grep { /\[$level\]/ } @lines), 1, "TEST 18 - one line at [$level]")
        or Test::More::diag(@lines);
}
Test::More::is(scalar(grep { /\[error\]/ } @lines), 0, "TEST 18 - none at [error]") or Test::More::diag(@lines);



=== TEST 19: a counter at the end of its numbers answers 410 and logs it at most once a second per worker
--- http_config
    ticket_zone x19:1m;
--- config
    location = /t { ticket_counter zone=x19 start=18446744073709551614; }
--- pipelined_requests eval
[("GET /t") x 40]
--- error_code eval
[200, 200, (410) x 38]
--- response_body eval
["18446744073709551614\n", "18446744073709551615\n", ("sold out\n") x 38]
--- error_log eval
qr/\[error\] .*ticket counter in zone "x19" ran out of numbers/
--- steps
sleep 1.1
GET /t => 410 "sold out\n"
--- check
my $log = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log";
open my $in, '<', $log or die "$log: $!";
my @lines = grep { /ticket counter in zone "x19" ran out of numbers/ } <$in>;
close $in;
my %seen;
my @twice = grep { /^(\S+ \S+) \[\w+\] (\d+)#/ && $seen{"$1 $2"}++ } @lines;
Test::More::ok(@lines >= 2 && @lines < 39, "TEST 19 - a few lines for 39 refusals: " . scalar @lines);
Test::More::is(scalar @twice, 0, "TEST 19 - never two in one second from one worker") or Test::More::diag(@lines);
