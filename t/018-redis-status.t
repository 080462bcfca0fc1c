# ticket_status on Redis zones, through nginx: pages of several slices
# (1,000 counters a slice, one slice per turn of the event loop) for a
# strict zone and a lease zone (on a Redis with a password), each with more
# than 2,000 keys. Every page must be valid JSON or well-formed Prometheus
# text listing every key once with its last ticket, the Redis section must
# name the authority without the password, and clients that stall, leave or
# reset in the middle of a page, or keys made between its slices, must not
# break the page or the worker. Each block uses zones of its own (HUP mode
# reloads between blocks; Redis keeps every block's counters anyway).
#
# A block's --- scenario section is Perl run after its last response
# (t/lib/AfterBlock.pm), with the helpers below (loopback only, every wait
# bounded).
use lib 't/lib';
use IO::Handle;
use JSON::PP ();
use List::Util qw(max min sum0);
use Socket qw(PF_INET SOCK_STREAM inet_aton pack_sockaddr_in);
use File::Temp qw(tempfile);
use Test::More;
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(sleep time);
use AfterBlock;
use Parked;
use RedisServer;

$ENV{TEST_NGINX_REDIS_PORT} = 16394;
$ENV{TEST_NGINX_REDIS_AUTH_PORT} = 16395;
# The kernel grows a loopback socket's send buffer to 4 MB, more than a
# whole page, so nginx would never wait for a slow reader. Pages are read
# on a second listener whose small send buffer (sndbuf=) makes nginx wait,
# as it would on a real network. prove-nginx gives the file a private
# network namespace, so fixed ports are free.
$ENV{TEST_NGINX_SMALL_SNDBUF_PORT} = 16396;
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_PORT});
RedisServer::start(port => $ENV{TEST_NGINX_REDIS_AUTH_PORT}, password => 'status-secret');

# valgrind makes everything slower
my $Slow = $ENV{TEST_NGINX_USE_VALGRIND} ? 6 : 1;
my $Name = '';

# Connections that take tickets at once (each a pipeline of requests), and
# requests a connection at most (nginx's keepalive_requests is 1000).
my $TakeConnections = 4;
my $RequestsPerConnection = 500;

# What the block handed out: $Last{zone}{key} is the highest ticket, and
# $Taken{zone} the number of tickets; the default counter's key is ''.
my (%Last, %Taken);

# Each block's zones: name => [mode, authority as the page shows it].
my %Zones;

sub zones {
    %Zones = @_;
    %Last = map { $_ => {} } keys %Zones;
    %Taken = map { $_ => 0 } keys %Zones;
}

sub connect_client {
    my ($port) = @_;
    $port //= Test::Nginx::Socket::server_port_for_client();
    socket(my $sock, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    connect($sock, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect: $!";
    binmode $sock;
    $sock->autoflush(1);
    return $sock;
}

# Reads what arrives within $seconds, until $bytes more came or the server
# closed; returns (data, closed).
sub read_some {
    my ($sock, $bytes, $seconds) = @_;
    my $data = '';
    my $deadline = time + $seconds;
    while (length $data < $bytes && time < $deadline) {
        my $rin = '';
        vec($rin, fileno($sock), 1) = 1;
        next unless select(my $rout = $rin, undef, undef, 0.05) > 0;
        my $got = sysread($sock, my $chunk, $bytes - length $data);
        return ($data, 1) unless $got;
        $data .= $chunk;
    }
    return ($data, 0);
}

sub read_to_close {
    my ($sock, $seconds) = @_;
    return read_some($sock, 1 << 30, $seconds);
}

# The end of a chunked body: a status page is complete once this came.
sub page_complete {
    my ($raw) = @_;
    return $raw =~ /\r\n0\r\n\r\n\z/;
}

# Splits a stream of responses into [STATUS, BODY] pairs: bodies by
# Content-Length or chunked; a response cut short is [STATUS, undef].
sub split_responses {
    my ($raw) = @_;
    my @out;
    while ($raw =~ s{\AHTTP/1\.\d (\d{3})[^\r]*\r\n((?:[^\r]+\r\n)*)\r\n}{}) {
        my ($status, $head) = ($1, $2);
        my $body = '';
        if ($head =~ /^Transfer-Encoding:\s*chunked/mi) {
            my $ended;
            while ($raw =~ s{\A([0-9a-fA-F]+)\r\n}{}) {
                my $size = hex $1;
                if ($size == 0) {
                    $ended = $raw =~ s{\A\r\n}{};
                    last;
                }
                last if length($raw) < $size + 2;
                $body .= substr($raw, 0, $size, '');
                $raw =~ s{\A\r\n}{};
            }
            $body = undef unless $ended;
        } elsif ($head =~ /^Content-Length:\s*(\d+)/mi) {
            $body = length($raw) >= $1 ? substr($raw, 0, $1, '') : undef;
        }
        push @out, [$status, $body];
        last unless defined $body;
    }
    return @out;
}

# GET on a connection of its own: (status, body).
sub fetch {
    my ($uri) = @_;
    my $sock = connect_client();
    syswrite($sock, "GET $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my ($raw) = read_to_close($sock, 20 * $Slow);
    close $sock;
    my ($response) = split_responses($raw);
    return @{ $response // ['', undef] };
}

# Takes one ticket for each URI (/ZONE?k=KEY, or /ZONE/default for the
# default counter), over $TakeConnections connections at once or more;
# records what was handed out. Returns the requests not answered 200 with
# a ticket.
sub take {
    my @uris = @_;
    my $per = min($RequestsPerConnection, int((@uris + $TakeConnections - 1) / $TakeConnections) || 1);
    my @conns;
    while (my @part = splice @uris, 0, $per) {
        my $sock = connect_client();
        $sock->blocking(0);
        my $out = join '', map { "GET $_ HTTP/1.1\r\nHost: localhost\r\n\r\n" } @part[0 .. $#part - 1];
        $out .= "GET $part[-1] HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        push @conns, { sock => $sock, uris => \@part, out => $out, in => '', open => 1 };
    }
    my $deadline = time + 60 * $Slow;
    # write and read together: a pipeline may be longer than the buffers
    while (time < $deadline && grep { $_->{open} } @conns) {
        my ($rin, $win) = ('', '');
        for my $c (grep { $_->{open} } @conns) {
            vec($rin, fileno $c->{sock}, 1) = 1;
            vec($win, fileno $c->{sock}, 1) = 1 if length $c->{out};
        }
        next unless select(my $rout = $rin, my $wout = $win, undef, 0.1) > 0;
        for my $c (grep { $_->{open} } @conns) {
            my $fd = fileno $c->{sock};
            if (length $c->{out} && vec($wout, $fd, 1)) {
                my $n = syswrite($c->{sock}, $c->{out});
                substr($c->{out}, 0, $n, '') if $n;
            }
            if (vec($rout, $fd, 1)) {
                my $n = sysread($c->{sock}, my $chunk, 65536);
                if ($n) {
                    $c->{in} .= $chunk;
                } elsif (defined $n || !$!{EAGAIN}) {
                    $c->{open} = 0;
                }
            }
        }
    }
    my @bad;
    for my $c (@conns) {
        close $c->{sock};
        my @responses = split_responses($c->{in});
        for my $i (0 .. $#{ $c->{uris} }) {
            my $uri = $c->{uris}[$i];
            my ($status, $body) = @{ $responses[$i] // ['', ''] };
            my ($zone, $key) = $uri =~ m{^/(\w+)(?:\?k=(.*)|/default)\z} or die "$Name: bad take URI $uri";
            if ($status eq '200' && defined $body && $body =~ /^(\d+)\n\z/) {
                $Last{$zone}{$key // ''} = max($1, $Last{$zone}{$key // ''} // 0);
                $Taken{$zone}++;
            } else {
                push @bad, "$uri: $status " . ($body // '(cut short)');
            }
        }
    }
    return @bad;
}

# take, as one test.
sub take_ok {
    my @uris = @_;
    my @bad = take(@uris);
    is(scalar(@bad), 0, "$Name - " . scalar(@uris) . " tickets taken") or diag join "\n", @bad[0 .. min(9, $#bad)];
}

# URIs for keys FROM .. TO of each zone, named key00001 and so on.
sub new_keys {
    my ($from, $to) = @_;
    return map { my $zone = $_; map { sprintf "/$zone?k=key%05d", $_ } $from .. $to } sort keys %Zones;
}

sub snapshot {
    return { last => { map { $_ => { %{ $Last{$_} } } } keys %Last }, taken => { %Taken } };
}

# Checks a JSON status page of every zone of the block. With $before (a
# snapshot when the page began) keys may have been made and tickets taken
# while it was sent: every counter that existed then must be on the page
# once, with a last ticket between the snapshot's and now's, and a key made
# meanwhile at most once. Without it the page must be exact. Returns how
# many keys made meanwhile the page shows.
sub check_json_page {
    my ($what, $body, $before) = @_;
    my $page = eval { JSON::PP->new->utf8->decode($body // '') };
    ok($page, "$Name - $what: valid JSON") or return diag(substr($body // '(cut short)', -300), " $@");
    is_deeply([sort keys %{ $page->{zones} }], [sort keys %Zones], "$Name - $what: every zone");
    my $then = $before // snapshot();
    my $made_meanwhile = 0;
    for my $zone (sort keys %Zones) {
        my $info = $page->{zones}{$zone} or next;
        my ($mode, $authority) = @{ $Zones{$zone} };
        my (%shown, @wrong);
        for my $row (@{ $info->{counters} }) {
            my $key = $row->{key} // '';
            push @wrong, "\"$key\" shown twice" if $shown{$key}++;
            my ($was, $now) = ($then->{last}{$zone}{$key}, $Last{$zone}{$key});
            if (!defined $now && $key ne '') {
                push @wrong, "\"$key\" was never made";
            } elsif (!defined $was && $key ne '') {
                $made_meanwhile++;
                push @wrong, "\"$key\": last " . ($row->{last} // 'null') . " past $now"
                    if defined $row->{last} && $row->{last} > $now;
            } elsif (($row->{last} // 0) < ($was // 0) || ($row->{last} // 0) > ($now // 0)) {
                push @wrong, "\"$key\": last " . ($row->{last} // 'null') . ", not within "
                    . ($was // 'null') . " .. " . ($now // 'null');
            }
            push @wrong, "\"$key\": issued $row->{issued}, last " . ($row->{last} // 'null')
                if ($row->{last} // 0) != $row->{issued} || ($row->{start} // 1) != 1;
            push @wrong, "\"$key\": lease " . ($row->{lease} // 'none') . " in $mode mode"
                if $mode eq 'lease' ? !defined $row->{lease} || $row->{lease} < 0 : exists $row->{lease};
        }
        my @missing = grep { !$shown{$_} } keys %{ $then->{last}{$zone} };
        push @wrong, "missing: @missing[0 .. min(9, $#missing)]" if @missing;
        push @wrong, "no default counter" unless $shown{''};
        is(scalar(@wrong), 0, "$Name - $what: $zone lists every key once, with its last ticket ("
           . scalar(@{ $info->{counters} }) . " counters)") or diag join "\n", @wrong[0 .. min(19, $#wrong)];
        # the zone's figures are those of the page's start
        my $keys = grep { $_ ne '' } keys %{ $then->{last}{$zone} };
        is($info->{keys}, $keys, "$Name - $what: $zone holds $keys keys");
        my $redis = $info->{redis} // {};
        is($redis->{authority}, $authority, "$Name - $what: $zone names its authority");
        is($redis->{mode}, $mode, "$Name - $what: $zone is in $mode mode");
        check_redis_figures("$what: $zone", $mode, $then->{taken}{$zone}, scalar(keys %{ $then->{last}{$zone} }),
                            @$redis{qw(workers connected batches tickets errors timeouts fences repairs)});
        is($redis->{tickets_per_batch}, $redis->{batches} ? int($redis->{tickets} / $redis->{batches}) : 0,
           "$Name - $what: $zone tickets per batch");
    }
    unlike($body, qr/status-secret/, "$Name - $what: no password");
    return $made_meanwhile;
}

# The Redis section's figures are sane: strict mode asks Redis for every
# ticket, in at least one batch a counter; lease mode asks at least one
# lease a counter and holds at least what it handed out; nothing failed.
sub check_redis_figures {
    my ($what, $mode, $taken, $counters, $workers, $connected, $batches, $tickets, @failures) = @_;
    my @wrong;
    push @wrong, "workers $workers" unless $workers >= 1 && $workers <= 2;
    push @wrong, "connected $connected of $workers" unless $connected >= 1 && $connected <= $workers;
    if ($mode eq 'strict') {
        push @wrong, "tickets $tickets, taken $taken" unless $tickets == $taken;
        push @wrong, "batches $batches for $taken tickets" unless $batches >= 1 && $batches <= $taken;
    } else {
        push @wrong, "tickets $tickets, taken $taken" unless $tickets >= $taken;
        push @wrong, "batches $batches for $counters counters" unless $batches >= $counters && $batches <= $tickets;
    }
    push @wrong, "errors, timeouts, fences, repairs: @failures" if grep { $_ != 0 } @failures;
    is(scalar(@wrong), 0, "$Name - $what: Redis figures ($batches batches, $tickets tickets)")
        or diag join "\n", @wrong;
}

# Checks a Prometheus status page: every line a HELP, a TYPE or a sample;
# one sample a counter per counter family, with the key's last ticket
# (within the snapshot's and now's, as for JSON); and prometheus_client's
# parser (PyPI) accepts it. Returns how many keys made meanwhile it shows.
sub check_prometheus_page {
    my ($what, $body, $before) = @_;
    my $then = $before // snapshot();
    ok(defined $body, "$Name - $what: the whole page") or return;
    my (%typed, %sample, @wrong);
    my $label = qr/"((?:[^"\\\n]|\\.)*)"/;
    for my $line (split /\n/, $body) {
        if ($line =~ /^# HELP (\w+) \S.*\z/) {
            next;
        } elsif ($line =~ /^# TYPE (\w+) (counter|gauge)\z/) {
            push @wrong, "$1 typed twice" if $typed{$1}++;
        } elsif ($line =~ /^(\w+)\{zone=$label(?:,key=$label)?\} (\d+)\z/) {
            my ($family, $zone, $key, $value) = ($1, $2, $3, $4);
            push @wrong, "$family sampled before its TYPE" unless $typed{$family};
            push @wrong, "$line: a second sample" if $sample{$family}{$zone}{$key // '(zone)'}++;
            if ($family eq 'ticket_last' && defined $key) {
                my ($was, $now) = ($then->{last}{$zone}{$key}, $Last{$zone}{$key});
                push @wrong, "$line: not within " . ($was // 'null') . " .. " . ($now // 'null')
                    if !defined $now || $value > $now || (defined $was && $value < $was);
            }
            push @wrong, "$line: zone holds $value keys"
                if $family eq 'ticket_zone_keys' && $value != grep { $_ ne '' } keys %{ $then->{last}{$zone} };
        } else {
            push @wrong, "malformed: \"$line\"";
        }
    }
    my $made_meanwhile = 0;
    for my $zone (sort keys %Zones) {
        my ($mode) = @{ $Zones{$zone} };
        my @families = ('ticket_issued_total', 'ticket_last', $mode eq 'lease' ? 'ticket_lease_left' : ());
        for my $family (@families) {
            my $shown = $sample{$family}{$zone} // {};
            # the default counter ('') has no last ticket until it is used
            my %want = map { $_ => 1 } keys %{ $then->{last}{$zone} };
            $want{''} = 1 unless $family eq 'ticket_last';
            my @missing = grep { !$shown->{$_} } keys %want;
            push @wrong, "$family $zone misses @missing[0 .. min(9, $#missing)]" if @missing;
            my @new = grep { $_ ne '' && !$want{$_} } keys %$shown;
            my @unknown = grep { !exists $Last{$zone}{$_} } @new;
            push @wrong, "$family $zone shows keys never made: @unknown" if @unknown;
            $made_meanwhile += @new if $family eq 'ticket_last';
        }
        push @wrong, "$zone has a ticket_max" if $sample{ticket_max}{$zone};
        push @wrong, "$zone has a ticket_lease_left" if $mode ne 'lease' && $sample{ticket_lease_left}{$zone};
        for my $family (qw(ticket_redis_batches_total ticket_redis_tickets_total ticket_redis_connected_workers)) {
            push @wrong, "no $family for $zone" unless $sample{$family}{$zone}{'(zone)'};
        }
    }
    my $samples = sum0 map { my $f = $_; sum0 map { scalar keys %$_ } values %{ $sample{$f} } } keys %sample;
    is(scalar(@wrong), 0, "$Name - $what: $samples samples, well-formed, every key once a family")
        or diag join "\n", @wrong[0 .. min(19, $#wrong)];
    is(prometheus_client_samples($body), $samples, "$Name - $what: prometheus_client reads every sample");
    unlike($body, qr/status-secret/, "$Name - $what: no password");
    return $made_meanwhile;
}

# How many samples prometheus_client's parser finds (dies on a bad page).
sub prometheus_client_samples {
    my ($text) = @_;
    my ($fh, $file) = tempfile(UNLINK => 1);
    binmode $fh;
    print $fh $text;
    close $fh;
    my $count = `python3 -c '
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1], encoding="utf-8").read()
print(sum(len(f.samples) for f in text_string_to_metric_families(text)))
' $file 2>&1`;
    chomp $count;
    return $count;
}

# Asks for a page ($pipelined times on one connection) on the small-sndbuf
# listener and reads until $bytes came; checks the page is not complete yet
# (nginx is in the middle of it). Returns the socket and what was read.
sub start_page {
    my ($uri, $bytes, $pipelined) = @_;
    my $sock = connect_client($ENV{TEST_NGINX_SMALL_SNDBUF_PORT});
    my $request = "GET $uri HTTP/1.1\r\nHost: localhost\r\n\r\n";
    syswrite($sock, $pipelined ? $request x $pipelined : $request);
    my ($got) = read_some($sock, $bytes, 10 * $Slow);
    ok(length($got) >= $bytes && !page_complete($got),
       "$Name - GET $uri: " . length($got) . " bytes, the page not complete");
    return ($sock, $got);
}

# Reads a page slowly, 16 KB at a time, taking the tickets $between
# returns for each turn before each read, until the page is complete;
# returns the body.
sub read_page_slowly {
    my ($sock, $got, $between) = @_;
    my ($turns, $asked, @bad) = (0, 0);
    my $deadline = time + 120 * $Slow;
    while (!page_complete($got) && time < $deadline) {
        my @uris = $between->(++$turns);
        $asked += @uris;
        push @bad, take(@uris);
        my ($more, $closed) = read_some($sock, 16384, 2 * $Slow);
        $got .= $more;
        last if $closed;
    }
    close $sock;
    is(scalar(@bad), 0, "$Name - $asked tickets taken while the page was sent")
        or diag join "\n", @bad[0 .. min(9, $#bad)];
    my ($response) = split_responses($got);
    my ($status, $body) = @{ $response // ['', undef] };
    is($status, 200, "$Name - the page read in $turns turns");
    return $body;
}

# evaled here so that it sees this file's variables
AfterBlock::install(scenario => \$Name, sub { eval $_[0] });

workers(2);
master_on();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 2,100 keys on a strict and a lease zone: both pages list every key once with its last ticket
--- http_config
    ticket_zone strict1:2m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
    ticket_zone lease1:2m redis=redis://:status-secret@127.0.0.1:$TEST_NGINX_REDIS_AUTH_PORT redis_timeout=5s lease=20;
--- config
    listen 127.0.0.1:$TEST_NGINX_SMALL_SNDBUF_PORT sndbuf=16k;
    location = /strict1 { ticket_counter zone=strict1 key=$arg_k; }
    location = /strict1/default { ticket_counter zone=strict1; }
    location = /lease1 { ticket_counter zone=lease1 key=$arg_k; }
    location = /lease1/default { ticket_counter zone=lease1; }
    location = /status { ticket_status; }
    location = /metrics { ticket_status format=prometheus; }
--- request
GET /status
--- response_body_like eval
qr/^\{"zones":\{"strict1":\{"capacity":\d+,"counters":\[\{"issued":0,"key":null,"last":null,"max":null,"start":null,"used":null\}\],"expired":0,"keys":0,"redis":\{"authority":"redis:\/\/127\.0\.0\.1:\d+\/0","batches":0,.*"lease1":\{"capacity":\d+,"counters":\[\{"issued":0,"key":null,"last":null,"lease":0,"max":null,"start":null,"used":null\}\],"expired":0,"keys":0,"redis":\{"authority":"redis:\/\/:\*\*\*\@127\.0\.0\.1:\d+\/0","batches":0,/s
--- scenario
zones(strict1 => ['strict', "redis://127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}/0"],
      lease1 => ['lease', "redis://:***\@127.0.0.1:$ENV{TEST_NGINX_REDIS_AUTH_PORT}/0"]);
take_ok(new_keys(1, 2100));
# a few counters with more than one ticket, the default counters too
take_ok(map { ("/strict1?k=key00007", "/lease1?k=key02000", "/strict1/default", "/lease1/default") } 1 .. 30);
my ($status, $json) = fetch('/status');
is($status, 200, "$Name - the JSON page");
check_json_page('JSON', $json);
my ($mstatus, $metrics) = fetch('/metrics');
is($mstatus, 200, "$Name - the Prometheus page");
check_prometheus_page('Prometheus', $metrics);
--- no_error_log
[alert]
exited on signal
--- timeout: 60



=== TEST 2: clients that stall, leave or reset in the middle of a page while tickets are taken; the worker goes on and the next page is whole
--- http_config
    ticket_zone strict2:2m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
    ticket_zone lease2:2m redis=redis://:status-secret@127.0.0.1:$TEST_NGINX_REDIS_AUTH_PORT redis_timeout=5s lease=20;
--- config
    listen 127.0.0.1:$TEST_NGINX_SMALL_SNDBUF_PORT sndbuf=16k;
    location = /strict2 { ticket_counter zone=strict2 key=$arg_k; }
    location = /strict2/default { ticket_counter zone=strict2; }
    location = /lease2 { ticket_counter zone=lease2 key=$arg_k; }
    location = /lease2/default { ticket_counter zone=lease2; }
    location = /status { ticket_status; }
    location = /metrics { ticket_status format=prometheus; }
    location = /status-impatient {
        send_timeout 1s;
        ticket_status;
    }
--- request
GET /strict2/default
--- response_body
1
--- scenario
zones(strict2 => ['strict', "redis://127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}/0"],
      lease2 => ['lease', "redis://:***\@127.0.0.1:$ENV{TEST_NGINX_REDIS_AUTH_PORT}/0"]);
# the block's own request
$Last{strict2}{''} = 1;
$Taken{strict2} = 1;
take_ok(new_keys(1, 2100));
my $next_key = 2101;
# 10 new keys a zone, and a ticket of 20 existing keys
my $more_tickets = sub {
    take_ok(new_keys($next_key, $next_key + 9), map { sprintf "/strict2?k=key%05d", $_ * 97 } 1 .. 20);
    $next_key += 10;
};
for my $uri ('/status', '/metrics') {
    # leaves (FIN) after a few KB
    my ($sock) = start_page($uri, 8192);
    $more_tickets->();
    close $sock;
    # resets (RST) after a few KB
    ($sock) = start_page($uri, 8192);
    $more_tickets->();
    Parked::reset_close($sock);
    # asks for the page twice on one connection, reads a little, resets
    ($sock) = start_page($uri, 2048, 2);
    $more_tickets->();
    Parked::reset_close($sock);
}
# stops reading: nginx gives up after send_timeout and closes
my ($sock, $got) = start_page('/status-impatient', 8192);
$more_tickets->();
sleep 1.5 * $Slow;
my ($rest, $closed) = read_to_close($sock, 15 * $Slow);
close $sock;
ok($closed && !page_complete($got . $rest),
   "$Name - nginx closed the stalled page after send_timeout (" . length($got . $rest) . " bytes)");
# the worker goes on, and the pages are whole
$more_tickets->();
my ($status, $json) = fetch('/status');
is($status, 200, "$Name - the JSON page afterwards");
check_json_page('JSON afterwards', $json);
my ($mstatus, $metrics) = fetch('/metrics');
is($mstatus, 200, "$Name - the Prometheus page afterwards");
check_prometheus_page('Prometheus afterwards', $metrics);
my $key1 = $Last{strict2}{key00001} + 1;
is(join(' ', fetch('/strict2?k=key00001')), "200 $key1\n", "$Name - a counter goes on");
Parked::worker_survived($Name);
--- no_error_log
[alert]
exited on signal
--- timeout: 120



=== TEST 3: keys made and tickets taken between the slices of a page: the page stays valid, with every earlier key once
--- http_config
    ticket_zone strict3:2m redis=redis://127.0.0.1:$TEST_NGINX_REDIS_PORT redis_timeout=5s;
    ticket_zone lease3:2m redis=redis://:status-secret@127.0.0.1:$TEST_NGINX_REDIS_AUTH_PORT redis_timeout=5s lease=20;
--- config
    listen 127.0.0.1:$TEST_NGINX_SMALL_SNDBUF_PORT sndbuf=16k;
    location = /strict3 { ticket_counter zone=strict3 key=$arg_k; }
    location = /strict3/default { ticket_counter zone=strict3; }
    location = /lease3 { ticket_counter zone=lease3 key=$arg_k; }
    location = /lease3/default { ticket_counter zone=lease3; }
    location = /status { ticket_status; }
    location = /metrics { ticket_status format=prometheus; }
--- request
GET /lease3/default
--- response_body
1
--- scenario
zones(strict3 => ['strict', "redis://127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}/0"],
      lease3 => ['lease', "redis://:***\@127.0.0.1:$ENV{TEST_NGINX_REDIS_AUTH_PORT}/0"]);
# the block's own request
$Last{lease3}{''} = 1;
$Taken{lease3} = 1;
take_ok(new_keys(1, 2100));
my $next_key = 2101;
# each turn: 10 new keys a zone, and a ticket of 10 existing keys a zone
my $between = sub {
    my ($turn) = @_;
    $next_key += 10;
    return (new_keys($next_key - 10, $next_key - 1),
            map { sprintf("/strict3?k=key%05d", $turn * 20 + $_), sprintf("/lease3?k=key%05d", $turn * 20 + $_) } 1 .. 10);
};
for my $uri ('/status', '/metrics') {
    my $before = snapshot();
    my ($sock, $got) = start_page($uri, 8192);
    my $body = read_page_slowly($sock, $got, $between);
    my $meanwhile = $uri eq '/status' ? check_json_page("JSON read slowly", $body, $before)
                                      : check_prometheus_page("Prometheus read slowly", $body, $before);
    # keys made behind the page's position are not on it, those ahead are
    ok($meanwhile > 0, "$Name - $uri shows $meanwhile keys made while it was sent");
}
my ($status, $json) = fetch('/status');
is($status, 200, "$Name - the JSON page afterwards");
check_json_page('JSON afterwards', $json);
my ($mstatus, $metrics) = fetch('/metrics');
is($mstatus, 200, "$Name - the Prometheus page afterwards");
check_prometheus_page('Prometheus afterwards', $metrics);
Parked::worker_survived($Name);
--- no_error_log
[alert]
exited on signal
--- timeout: 120
