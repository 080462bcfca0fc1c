package Parked;

# Scenarios for requests that wait: a durable zone's request waits for its
# reservation to reach the disk, and these scenarios keep it waiting by
# holding the state directory's lock (as a stuck or full disk would), then
# end the request in the ways nginx can: a bad request body, a graceful
# quit, a client that leaves, the deadline. Run through the documented
# add_response_body_check hook after the block's own request, so they work
# the same under the real Test::Nginx and the project's fallback runner.
#
# A block opts in with:
#
#   --- parked: SCENARIO
#       chunked | quit | gone | deadline
#   --- parked_dir: DIRECTORY
#       the state directory whose lock is held
#   --- parked_uri: URI
#       a location that takes from a durable zone with key=$arg_k
#
# Loopback only; every socket and wait has a timeout.

use strict;
use warnings;

use Fcntl qw(O_RDONLY O_DIRECTORY LOCK_EX);
use IO::Socket::INET;
use POSIX ();
use Socket ();
use Test::More;
use Test::Nginx::Socket;
use Time::HiRes qw(sleep time);

# valgrind makes everything slower
my $Slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 1;

# Holds the directory's lock in a child for $seconds; returns its pid once
# the lock is held.
sub hold_lock {
    my ($dir, $seconds) = @_;
    pipe(my $ready_r, my $ready_w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $ready_r;
        sysopen(my $fh, $dir, O_RDONLY | O_DIRECTORY) or POSIX::_exit(1);
        flock($fh, LOCK_EX) or POSIX::_exit(1);
        syswrite $ready_w, "1";
        close $ready_w;
        sleep $seconds;
        POSIX::_exit(0);
    }
    close $ready_w;
    my $got = '';
    sysread $ready_r, $got, 1;
    close $ready_r;
    die "could not lock $dir" unless $got eq '1';
    return $pid;
}

sub connect_server {
    my $port = Test::Nginx::Socket::server_port_for_client();
    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 5 * $Slow,
    ) or die "connect: $!";
    return $sock;
}

# Closes with an RST instead of a FIN (SO_LINGER 0): a client that vanishes.
sub reset_close {
    my ($sock) = @_;
    setsockopt($sock, Socket::SOL_SOCKET(), Socket::SO_LINGER(), pack('ii', 1, 0));
    close $sock;
}

# Everything the server sends until it closes (or $seconds pass, or
# $done->($raw), when given, says it has what it wants).
sub read_all {
    my ($sock, $seconds, $done) = @_;
    my $raw = '';
    my $deadline = time + $seconds;
    while (time < $deadline) {
        my $rin = '';
        vec($rin, fileno($sock), 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 0.05);
        my $got = sysread($sock, my $chunk, 65536);
        last unless $got;
        $raw .= $chunk;
        last if $done && $done->($raw);
    }
    return $raw;
}

# Whether $raw holds a whole response with a Content-Length.
sub response_complete {
    my ($raw) = @_;
    my $head = index($raw, "\r\n\r\n");
    return 0 if $head < 0;
    my ($len) = $raw =~ /^Content-Length:\s*(\d+)/mi;
    return defined $len && length($raw) >= $head + 4 + $len;
}

# Reads one response (or until the server closes); returns (status, body).
sub read_response {
    my ($sock, $timeout) = @_;
    my $raw = read_all($sock, $timeout, \&response_complete);
    my ($status) = $raw =~ m{^HTTP/1\.\d (\d+)};
    my $body = $raw =~ /\r\n\r\n(.*)\z/s ? $1 : '';
    return ($status // '', $body);
}

sub get {
    my ($uri) = @_;
    my $sock = connect_server();
    print $sock "GET $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    my @response = read_response($sock, 8 * $Slow);
    close $sock;
    return @response;
}

sub wait_child {
    my ($pid, $seconds) = @_;
    my $deadline = time + $seconds;
    while (time < $deadline) {
        return 1 if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return 0;
}

# Alive and not a zombie (under valgrind, nginx is the test's own child).
sub running {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh> // '';
    return $stat !~ /^\d+ \(.*\) Z /;
}

sub error_log_text {
    open my $fh, '<', $Test::Nginx::Util::ErrLogFile or return '';
    local $/;
    return <$fh>;
}

sub worker_survived {
    my ($name) = @_;
    my $log = error_log_text();
    unlike($log, qr/exited on signal/, "$name - no worker died");
}

sub chunked {
    my ($name, $dir, $uri) = @_;
    my $lock = hold_lock($dir, 2 * $Slow);
    my $sock = connect_server();
    # a complete first chunk: nginx discards the body asynchronously and
    # the handler parks the request on a new key
    print $sock "POST $uri" . "chunked1 HTTP/1.1\r\nHost: localhost\r\n"
        . "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
    sleep 0.5 * $Slow;
    # then a bad chunk-size line: nginx ends the request while it waits
    print $sock "zz\r\n";
    my ($status) = read_response($sock, 5 * $Slow);
    close $sock;
    ok($status eq '' || $status =~ /^4\d\d$/, "$name - the bad body ends the request ($status)");
    wait_child($lock, 4 * $Slow);
    my ($ok, $body) = get($uri . "after");
    is("$ok $body", "200 1\n", "$name - the worker answers afterwards");
    worker_survived($name);
}

sub quit {
    my ($name, $dir, $uri) = @_;
    my $lock = hold_lock($dir, 3 * $Slow);
    my @socks;
    for my $i (1 .. 4) {
        my $sock = connect_server();
        print $sock "GET $uri" . "quit$i HTTP/1.1\r\nHost: localhost\r\n\r\n";
        push @socks, $sock;
    }
    sleep 0.5 * $Slow;
    open my $pidfh, '<', $Test::Nginx::Util::PidFile or die "pid file: $!";
    chomp(my $master = <$pidfh>);
    close $pidfh;
    my $asked = time;
    kill 'QUIT', $master;
    my @got = map { join ' ', read_response($_, 3 * $Slow) } @socks;
    my $took = time - $asked;
    close $_ for @socks;
    is_deeply(\@got, [("503 try again\n") x 4], "$name - parked requests answered at once");
    cmp_ok($took, '<', 2 * $Slow, "$name - within the quit, not at a deadline");
    wait_child($lock, 5 * $Slow);
    my $deadline = time + 10 * $Slow;
    sleep 0.1 while time < $deadline && running($master);
    ok(!running($master), "$name - nginx exited");
    worker_survived($name);
}

sub gone {
    my ($name, $dir, $uri) = @_;
    my $lock = hold_lock($dir, 2 * $Slow);
    my $sock = connect_server();
    print $sock "GET $uri" . "gone1 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    sleep 0.3 * $Slow;
    close $sock;
    wait_child($lock, 4 * $Slow);
    sleep 0.3 * $Slow;
    my ($ok, $body) = get($uri . "gone2");
    is("$ok $body", "200 1\n", "$name - the worker answers afterwards");
    like(error_log_text(), qr/client prematurely closed connection/,
         "$name - the client's leaving was noticed");
    worker_survived($name);
}

sub deadline {
    my ($name, $dir, $uri) = @_;
    my $lock = hold_lock($dir, 7 * $Slow);
    my $asked = time;
    my ($status, $body) = get($uri . "late1");
    my $took = time - $asked;
    is("$status $body", "500 ticket state not saved\n", "$name - answered at the deadline");
    cmp_ok($took, '>=', 4.5, "$name - after waiting about 5 s");
    wait_child($lock, 8 * $Slow);
    my ($ok, $after) = get($uri . "late2");
    is("$ok $after", "200 1\n", "$name - tickets resume once the disk answers");
    worker_survived($name);
}

my %Scenarios = (chunked => \&chunked, quit => \&quit, gone => \&gone, deadline => \&deadline);

sub check {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $scenario = $block->parked;
    return unless defined $scenario;
    $scenario =~ s/\s+//g;
    my $name = $block->name;
    SKIP: {
        skip "$name - parked scenario skipped: $dry_run", 1 if $dry_run;
        my $run = $Scenarios{$scenario} or die "$name: unknown scenario \"$scenario\"";
        my $dir = $block->parked_dir;
        my $uri = $block->parked_uri;
        s/\s+//g for $dir, $uri;
        $dir =~ s/\$(\w+)/$ENV{$1}/g;
        $run->($name, $dir, $uri);
    }
}

Test::Nginx::Socket::add_response_body_check(\&check);

1;
