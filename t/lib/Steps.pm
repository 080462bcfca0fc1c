package Steps;

# A scripted conversation with nginx after a block's own request, for what
# pipelined requests cannot express (waiting between requests). Runs
# through the documented add_response_body_check hook, so it works the same
# under the real Test::Nginx and the project's fallback runner.
#
#   --- steps
#   GET /t?k=a => 200 "1\n"
#   sleep 2.2
#   GET /pub?k=a => 404 /no such counter/
#   POST /admin?key=a&next=5 => 200
#
# A step is METHOD URI => STATUS, optionally followed by the expected body,
# exactly ("…", with \n) or as a regex (/…/), then optionally `after
# SECONDS` and `within SECONDS` (the answer's time, request sent to response
# read, at least and below); or `quit within SECONDS` (QUIT to the master,
# which must be gone in time); or
# `sleep SECONDS`; or
# `redis PORT ARGS… => EXPECTED`, a redis-cli command against a server
# t/lib/RedisServer.pm started (ARGS may name $TEST_NGINX_* variables).
# Every request goes on a connection of its own; loopback only, with
# timeouts.

use strict;
use warnings;

use IO::Socket::INET;
use Test::More;
use Test::Nginx::Socket;
use Time::HiRes qw(sleep time);

use Parked;
use RedisServer;

sub request {
    my ($method, $uri) = @_;
    my $port = Test::Nginx::Socket::server_port_for_client();
    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 10,
    ) or return ('', "connect: $!");
    my $length = $method eq 'POST' ? "Content-Length: 0\r\n" : '';
    print $sock "$method $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$length\r\n";
    my $raw = Parked::read_all($sock, 10);
    close $sock;
    my ($status) = $raw =~ m{^HTTP/1\.\d (\d+)};
    my $body = $raw =~ /\r\n\r\n(.*)\z/s ? $1 : '';
    return ($status // '', $body);
}

sub check_text {
    my ($got, $want, $what) = @_;
    if ($want =~ m{^/(.*)/$}) {
        like($got, qr/$1/, $what);
    } elsif ($want =~ /^"(.*)"$/) {
        (my $exact = $1) =~ s/\\n/\n/g;
        is($got, $exact, $what);
    }
}

sub check {
    my ($block, $body, $req_idx, $repeated_req_idx, $dry_run) = @_;
    my $steps = $block->steps;
    return unless defined $steps;
    my $name = $block->name;
    my $requests = $block->pipelined_requests // $block->request;
    my $count = ref $requests eq 'ARRAY' ? @$requests : 1;
    return if $req_idx != $count - 1;
    SKIP: {
        skip "$name - steps skipped: $dry_run", 1 if $dry_run;
        my $n = 0;
        for my $line (split /\n/, $steps) {
            next if $line =~ /^\s*(#|$)/;
            $n++;
            if ($line =~ /^\s*sleep\s+([\d.]+)\s*$/) {
                # Exactly as long in every mode: steps time idle expiry.
                sleep $1;
                next;
            }
            if ($line =~ /^\s*quit\s+within\s+([\d.]+)\s*$/) {
                my $within = $1;
                open my $pidfh, '<', $Test::Nginx::Util::PidFile or die "pid file: $!";
                chomp(my $master = <$pidfh>);
                close $pidfh;
                my $t0 = time;
                kill 'QUIT', $master;
                sleep 0.05 while time - $t0 < 3 * $within && Parked::running($master);
                my $took = time - $t0;
                ok(!Parked::running($master), "$name - step $n: nginx quit");
                cmp_ok($took, '<', $within,
                       sprintf("%s - step %d: nginx quit within %s s (%.3f s)", $name, $n, $within, $took));
                next;
            }
            if ($line =~ /^\s*redis\s+(\S+)\s+(.*?)\s*=>\s*(.*?)\s*$/) {
                my ($port, $args, $want) = ($1, $2, $3);
                s/\$(\w+)/$ENV{$1}/g for $port, $args;
                my $got = RedisServer::cli($port, undef, split ' ', $args);
                check_text($got, $want, "$name - step $n: redis $args");
                next;
            }
            my ($method, $uri, $want_status, $want_body, $after, $within) =
                $line =~ m{^\s*(\w+)\s+(\S+)\s*=>\s*(\d+)\s*(.*?)\s*(?:\bafter\s+([\d.]+))?\s*(?:\bwithin\s+([\d.]+))?\s*$}
                or die "$name: bad step \"$line\"";
            my $t0 = time;
            my ($status, $got) = request($method, $uri);
            my $took = time - $t0;
            is($status, $want_status, "$name - step $n: $method $uri status");
            check_text($got, $want_body, "$name - step $n: $method $uri body");
            if (defined $after) {
                cmp_ok($took, '>=', $after,
                       sprintf("%s - step %d: %s %s answered after %s s (%.3f s)",
                               $name, $n, $method, $uri, $after, $took));
            }
            if (defined $within) {
                cmp_ok($took, '<', $within,
                       sprintf("%s - step %d: %s %s answered within %s s (%.3f s)",
                               $name, $n, $method, $uri, $within, $took));
            }
        }
    }
}

Test::Nginx::Socket::add_response_body_check(\&check);

1;
