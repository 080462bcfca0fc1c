package RedisServer;

# Real redis-server processes for a test file: started by the test itself,
# on loopback, each in a directory of its own, with the persistence the
# README recommends (appendonly yes, appendfsync always); stopped by pid when
# the file ends. prove-nginx runs the suite in a private network namespace,
# so the fixed ports below are the file's alone.
#
#   use RedisServer;
#   RedisServer::start(port => 16390);
#   RedisServer::start(port => 16391, password => 'secret');
#   RedisServer::start(port => 16393, replicaof => 16390);
#   RedisServer::mute(port => 16392);    # accepts, never answers
#   RedisServer::slow(port => 16394, to => 16390, delay => 0.7);
#                                        # Redis, each connection late
#
# Without redis-server installed the file dies with a clear message
# (scripts/test installs it).

use strict;
use warnings;

use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);

my %Pids;    # port => pid

sub start {
    my %opt = @_;
    my $port = $opt{port} or die "RedisServer::start needs a port";
    my $dir = tempdir("ngx-ticket-redis-$port-XXXXXX", TMPDIR => 1, CLEANUP => 1);
    my @args = ('redis-server', '--port', $port, '--bind', '127.0.0.1',
                '--dir', $dir, '--save', '', '--appendonly', 'yes',
                '--appendfsync', 'always', '--daemonize', 'no',
                '--logfile', "$dir/redis.log");
    push @args, '--requirepass', $opt{password} if defined $opt{password};
    push @args, '--replicaof', '127.0.0.1', $opt{replicaof} if defined $opt{replicaof};
    system('sh', '-c', 'command -v redis-server >/dev/null') == 0
        or die "redis-server is not installed (apt-get install redis-server)\n";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        exec @args or POSIX::_exit(127);
    }
    $Pids{$port} = $pid;
    my $deadline = time + 10;
    while (time < $deadline) {
        my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                         Proto => 'tcp', Timeout => 1);
        if ($sock) {
            close $sock;
            return $pid;
        }
        sleep 0.05;
    }
    die "redis-server on port $port did not start (see $dir/redis.log)\n";
}

# A listening socket on loopback for a stand-in server (`$what` names it in
# the error).
sub listener {
    my ($port, $what) = @_;
    my $listen = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'tcp',
        Listen => 64, ReuseAddr => 1,
    ) or die "a $what listener on port $port: $!\n";
    return $listen;
}

# A server that accepts connections and never answers: a hung Redis as
# nginx sees it (the TCP connection is up, no reply ever comes). Stopped
# with the others.
#
#   RedisServer::mute(port => 16392);
sub mute {
    my %opt = @_;
    my $port = $opt{port} or die "RedisServer::mute needs a port";
    my $listen = listener($port, 'mute');
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        $SIG{$_} = 'DEFAULT' for qw(TERM INT);
        my @held;    # read nothing, answer nothing, close nothing
        while (1) {
            my $client = $listen->accept or next;
            push @held, $client;
        }
    }
    close $listen;
    $Pids{$port} = $pid;
    return $pid;
}

# A way to a Redis started here whose connections begin late: each one
# accepted is held `delay` seconds, then relayed both ways to port `to`.
# Workers that just started are still connecting (or in their handshake)
# for that long. Stopped with the others (and its relays with it).
#
#   RedisServer::slow(port => 16394, to => 16390, delay => 0.7);
sub slow {
    my %opt = @_;
    my ($port, $to) = @opt{qw(port to)};
    die "RedisServer::slow needs a port and a to" unless $port && $to;
    my $delay = $opt{delay} // 0.5;
    my $listen = listener($port, 'slow');
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my %relays;
        $SIG{TERM} = sub { kill 'TERM', keys %relays; POSIX::_exit(0) };
        $SIG{CHLD} = sub { while ((my $done = waitpid(-1, POSIX::WNOHANG())) > 0) { delete $relays{$done} } };
        while (1) {
            my $client = $listen->accept or next;
            my $relay = fork;
            if (!defined $relay) {
                close $client;
                next;
            }
            if ($relay == 0) {
                $SIG{$_} = 'DEFAULT' for qw(TERM CHLD);
                close $listen;
                relay($client, $to, $delay);
                POSIX::_exit(0);
            }
            $relays{$relay} = 1;
            close $client;
        }
    }
    close $listen;
    $Pids{$port} = $pid;
    return $pid;
}

sub relay {
    my ($client, $to, $delay) = @_;
    require IO::Select;
    sleep $delay;
    my $server = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $to,
                                       Proto => 'tcp') or return;
    my %other = ($client => $server, $server => $client);
    my $select = IO::Select->new($client, $server);
    while (1) {
        for my $from ($select->can_read) {
            my $n = sysread $from, my $buf, 65536;
            return unless $n;
            my $off = 0;
            while ($off < $n) {
                my $w = syswrite $other{$from}, $buf, $n - $off, $off;
                return unless $w;
                $off += $w;
            }
        }
    }
}

# Runs redis-cli against a server started here; returns its output, chomped.
sub cli {
    my ($port, $password, @args) = @_;
    my @auth = defined $password ? ('-a', $password, '--no-auth-warning') : ();
    open my $out, '-|', 'redis-cli', '-p', $port, @auth, @args
        or die "redis-cli: $!";
    local $/;
    my $text = <$out> // '';
    close $out;
    $text =~ s/\s+\z//;
    return $text;
}

END {
    # waitpid sets $?, which is the file's exit status once END runs
    local $?;
    for my $pid (values %Pids) {
        kill 'TERM', $pid;
    }
    for my $pid (values %Pids) {
        my $deadline = time + 10;
        while (time < $deadline) {
            last if waitpid($pid, POSIX::WNOHANG()) == $pid;
            sleep 0.05;
        }
        if (kill 0, $pid) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
        }
    }
}

1;
